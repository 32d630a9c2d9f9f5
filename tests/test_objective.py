"""The factored, kernel-based objective and gradients against the dense reference and finite differences."""

import numpy as np
import pytest
from conftest import params_from_theta, random_case

import reference as ref
from fastjmt.objective import TERMS, evaluate

BLOCKS = ("Z_atac", "Z_rna", "Z_regions", "Z_genes", "S_atac", "S_rna")


def dense_args(c):
    return c["R"].toarray(), c["G"].toarray(), c["A"].toarray(), c["w"], c["rna_only"], c["atac_only"]


def ref_total(c, theta):
    R, G, A, w, ro, ao = dense_args(c)
    return ref.loss_terms(R, G, A, theta, w, ro, ao)["total"]


@pytest.mark.parametrize("layout", [(2, 1, 1), (3, 0, 0), (2, 1, 0)])
def test_terms_match_dense_reference(layout):
    c = random_case(seed=1, layout=layout)
    terms, _ = evaluate(c["problem"], params_from_theta(c["theta"]))
    expect = ref.loss_terms(*dense_args(c)[:3], c["theta"], c["w"], c["rna_only"], c["atac_only"])
    for t in TERMS + ("total",):
        assert terms[t] == pytest.approx(expect[t], rel=1e-10, abs=1e-12), t


@pytest.mark.parametrize("layout", [(2, 1, 1), (3, 0, 0)])
def test_gradients_match_dense_reference(layout):
    c = random_case(seed=2, layout=layout)
    _, grads = evaluate(c["problem"], params_from_theta(c["theta"]))
    expect = ref.gradients(*dense_args(c)[:3], c["theta"], c["w"], c["rna_only"], c["atac_only"])
    for b in BLOCKS:
        np.testing.assert_allclose(grads[b], expect[b], rtol=1e-9, atol=1e-12, err_msg=b)


def test_reference_gradients_match_central_differences():
    """Every entry of every block of the reference gradient, by central differences (tiny problem)."""
    c = random_case(seed=3, n_atac=5, n_rna=4, n_genes=3, n_regions=4, layout=(1, 1, 1))
    expect = ref.gradients(*dense_args(c)[:3], c["theta"], c["w"], c["rna_only"], c["atac_only"])
    h = 1e-6
    for b in BLOCKS:
        fd = np.zeros_like(c["theta"][b])
        for idx in np.ndindex(fd.shape):
            th = {k: v.copy() for k, v in c["theta"].items()}
            th[b][idx] += h
            up = ref_total(c, th)
            th[b][idx] -= 2 * h
            fd[idx] = (up - ref_total(c, th)) / (2 * h)
        np.testing.assert_allclose(expect[b], fd, rtol=1e-5, atol=1e-7, err_msg=b)


@pytest.mark.parametrize("seed", [4, 5])
def test_kernel_gradients_random_direction(seed):
    """Directional derivative of the kernel loss along a random direction, on a medium problem."""
    c = random_case(seed=seed, n_atac=120, n_rna=90, n_genes=40, n_regions=70, layout=(3, 1, 1), density=0.1)
    prob, theta = c["problem"], c["theta"]
    _, grads = evaluate(prob, params_from_theta(theta))
    rng = np.random.default_rng(seed)
    h = 1e-5
    for b in BLOCKS:
        d = rng.normal(size=theta[b].shape)
        plus = {k: v.copy() for k, v in theta.items()}
        minus = {k: v.copy() for k, v in theta.items()}
        plus[b] += h * d
        minus[b] -= h * d
        fd = (evaluate(prob, params_from_theta(plus), with_grad=False)[0]["total"]
              - evaluate(prob, params_from_theta(minus), with_grad=False)[0]["total"]) / (2 * h)
        assert np.sum(grads[b] * d) == pytest.approx(fd, rel=1e-5, abs=1e-8), b


def test_csr_and_dense_inputs_give_same_loss():
    c = random_case(seed=6)
    from fastjmt import preprocess as pp
    from fastjmt.problem import build_problem

    G, R, A = (pp.to_csr(M.toarray()) for M in (c["G"], c["R"], c["A"]))
    dense_problem = build_problem(G, R, A, 2, 1, 1, c["w"], np.float64)
    a = evaluate(c["problem"], params_from_theta(c["theta"]), with_grad=False)[0]["total"]
    b = evaluate(dense_problem, params_from_theta(c["theta"]), with_grad=False)[0]["total"]
    assert a == pytest.approx(b, rel=1e-12)


def test_int32_and_int64_indices_agree():
    a = random_case(seed=7, index_dtype=np.int32)
    b = random_case(seed=7, index_dtype=np.int64)
    assert b["problem"].rna.X[0].dtype == np.int64 and a["problem"].rna.X[0].dtype == np.int32
    ta, ga = evaluate(a["problem"], params_from_theta(a["theta"]))
    tb, gb = evaluate(b["problem"], params_from_theta(b["theta"]))
    assert ta["total"] == tb["total"]
    for k in BLOCKS:
        np.testing.assert_array_equal(ga[k], gb[k])


def test_float32_close_to_float64():
    a = random_case(seed=8, dtype=np.float64)
    b = random_case(seed=8, dtype=np.float32)
    ta, ga = evaluate(a["problem"], params_from_theta(a["theta"], np.float64))
    tb, gb = evaluate(b["problem"], params_from_theta(b["theta"], np.float32))
    assert tb["total"] == pytest.approx(ta["total"], rel=1e-4)
    for k in BLOCKS:
        assert gb[k].dtype == np.float32 or k.startswith("S_")
        np.testing.assert_allclose(gb[k], ga[k], rtol=1e-3, atol=1e-4 * np.abs(ga[k]).max())


def test_zero_norm_cosine_is_flat_not_nan():
    c = random_case(seed=9)
    c["theta"]["S_atac"][:] = 0.0
    terms, grads = evaluate(c["problem"], params_from_theta(c["theta"]))
    assert terms["cos_S"] == 0.0
    assert all(np.isfinite(g).all() for g in grads.values())

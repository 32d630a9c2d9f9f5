"""Property-based tests: over random shapes, densities, dtypes and layouts the fit returns finite factors whose
rows sum to one, and never changes its inputs."""

import warnings

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastjmt


@st.composite
def problems(draw):
    n_shared = draw(st.integers(1, 3))
    n_rna_only = draw(st.integers(0, 2))
    n_atac_only = draw(st.integers(0, 2))
    K = n_shared + n_rna_only + n_atac_only
    if K < 2:
        n_rna_only += 1
        K += 1
    n_rna = draw(st.integers(K, 40))
    n_atac = draw(st.integers(K, 40))
    n_genes = draw(st.integers(2, 30))
    n_regions = draw(st.integers(2, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    dens = [draw(st.sampled_from([0.0, 0.02, 0.2, 0.9])) for _ in range(3)]
    fmt = draw(st.sampled_from(["csr", "csc", "coo", "dense"]))

    def mat(n, p, density, counts):
        M = sp.random(n, p, density=density, random_state=rng, format="csr")
        if M.nnz == 0:  # a matrix without any nonzero is refused (test_realworld.py); keep one value
            M = sp.csr_matrix(([0.5], ([int(rng.integers(n))], [int(rng.integers(p))])), shape=(n, p))
        if counts:
            M.data = np.ceil(M.data * 20)
        return M.toarray() if fmt == "dense" else M.asformat(fmt)

    return dict(
        rna=mat(n_rna, n_genes, dens[0], True), atac=mat(n_atac, n_regions, dens[1], False),
        gene_activity=mat(n_genes, n_regions, dens[2], False), n_shared=n_shared, n_rna_only=n_rna_only,
        n_atac_only=n_atac_only, dtype=draw(st.sampled_from([np.float32, np.float64])),
        init=draw(st.sampled_from(["spectral", "random"])), random_state=seed % 1000,
        batch_cells=draw(st.sampled_from([1.0, 0.5])),
    )


def _copy(x):
    return x.copy()


def _equal(a, b):
    if sp.issparse(a):
        return a.format == b.format and a.dtype == b.dtype and (a != b).nnz == 0
    return np.array_equal(a, b)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fit_is_finite_on_the_simplex_and_leaves_inputs_alone(kw):
    before = {k: _copy(kw[k]) for k in ("rna", "atac", "gene_activity")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        res = fastjmt.fit(max_iter=4, **kw)
    for C in (res.C_rna, res.C_atac, res.C_genes, res.C_regions):
        assert C.dtype == kw["dtype"] and np.all(np.isfinite(C)) and np.all(C >= 0)
        np.testing.assert_allclose(C.sum(axis=1), 1.0, rtol=1e-4)
    for a in (res.S_rna, res.S_atac, res.b_rna, res.b_atac, res.b_genes, res.b_regions, res.loss_history):
        assert np.all(np.isfinite(a))
    assert np.all(np.diff(res.loss_history[:, -1]) <= 0)  # backtracking (the default): the loss never rises
    for X, empty in ((kw["rna"], res.empty_rna), (kw["atac"], res.empty_atac)):  # cells without counts are flagged
        np.testing.assert_array_equal(empty, np.asarray(abs(sp.csr_matrix(X)).sum(axis=1)).ravel() == 0)
        C = res.C_rna if X is kw["rna"] else res.C_atac
        np.testing.assert_allclose(C[empty], 1.0 / C.shape[1], rtol=1e-6)
    for k, v in before.items():
        assert _equal(v, kw[k]), k

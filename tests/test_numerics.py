"""Numerical safety: zero norms, overflow, huge values, float32 underflow, and the int64 index path."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import params_from_theta, random_case

import fastjmt
from fastjmt.problem import build_problem
from fastjmt.driver import Schedule, run_once
from fastjmt.objective import evaluate


@pytest.fixture(scope="module")
def d():
    return fastjmt.simulate(n_rna=120, n_atac=100, n_genes=50, n_regions=90, random_state=4)


def _fit(d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        args = dict(rna=d.rna, atac=d.atac, gene_activity=d.gene_activity, n_shared=3, max_iter=8)
        args.update(kw)
        return fastjmt.fit(**args)


def _finite(res):
    arrays = (res.C_rna, res.C_atac, res.C_genes, res.C_regions, res.S_rna, res.S_atac, res.b_rna, res.b_atac,
              res.b_genes, res.b_regions, res.loss_history)
    return all(np.all(np.isfinite(a)) for a in arrays)


def test_gene_activity_without_links_is_refused_and_one_link_gives_no_nan(d):
    empty = sp.csr_matrix(d.gene_activity.shape, dtype=np.float32)
    with pytest.raises(ValueError, match="gene_activity has no nonzero link"):
        _fit(d, gene_activity=empty)  # nothing would bridge the modalities: refused, not fitted silently
    one = sp.csr_matrix(([1.0], ([0], [0])), shape=d.gene_activity.shape)
    with pytest.warns(UserWarning, match="low gene activity coverage"):
        res = _fit(d, gene_activity=one)
    assert _finite(res)


def test_all_zero_modality_rows_and_a_constant_matrix(d):
    atac = d.atac.tolil()
    atac[:10, :] = 0
    res = _fit(d, atac=atac.tocsr())
    assert _finite(res)
    ones = sp.csr_matrix(np.ones(d.atac.shape, dtype=np.float32))  # every cell identical
    assert _finite(_fit(d, atac=ones))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_very_large_counts(d, dtype):
    huge = d.rna.astype(np.float64) * 1e30
    assert _finite(_fit(d, rna=huge, dtype=dtype))  # preprocessing normalises them


def test_large_unpreprocessed_values_either_fit_or_stop_with_a_clear_error(d):
    from fastjmt import preprocess as pp

    G = pp.preprocess_rna(pp.to_csr(d.rna))
    G.data *= 1e6
    try:
        res = _fit(d, rna=G, preprocess=False, dtype=np.float32)
    except fastjmt.NonFiniteError as exc:
        assert "iteration" in str(exc)
    else:
        assert _finite(res)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_do_not_overflow_or_underflow_into_nan(dtype):
    c = random_case(seed=12, dtype=dtype)
    theta = c["theta"]
    theta["Z_atac"] = theta["Z_atac"] * 1e4  # softmax saturates, exp underflows in float32
    theta["Z_genes"][0] = [800.0, -800.0, 0.0, 0.0]
    terms, grads = evaluate(c["problem"], params_from_theta(theta, dtype))
    assert all(np.isfinite(v) for v in terms.values())
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_nan_factor_is_reported_with_block_and_iteration(d):
    with pytest.raises(fastjmt.NonFiniteError, match=r"(block \w+ at )?iteration \d+"):
        _fit(d, optimizer="gd", learning_rate=1e200, max_iter=5, dtype=np.float32)


def test_int64_index_path_gives_identical_results():
    """Matrices with int64 indptr/indices (what scipy uses past 2**31 - 1 nonzeros) take the same arithmetic."""
    d = fastjmt.simulate(n_rna=80, n_atac=70, n_genes=40, n_regions=60, random_state=5)
    w = dict(fastjmt.DEFAULT_WEIGHTS)
    from fastjmt import preprocess as pp

    mats = [pp.to_csr(m) for m in (pp.preprocess_rna(pp.to_csr(d.rna)), d.atac, d.gene_activity)]
    p32 = build_problem(*mats, 3, 1, 1, w, np.float64)
    for m in mats:
        m.indptr = m.indptr.astype(np.int64)
        m.indices = m.indices.astype(np.int64)
    p64 = build_problem(*mats, 3, 1, 1, w, np.float64)
    assert p64.rna.X[0].dtype == np.int64 and p64.atac.Xt[1].dtype == np.int64 and p64.A[0].dtype == np.int64
    assert p32.rna.X[0].dtype == np.int32
    sched = Schedule(max_iter=5)
    a, b = run_once(p32, sched, 3, 1, 1, 11), run_once(p64, sched, 3, 1, 1, 11)
    np.testing.assert_array_equal(a.history, b.history)
    np.testing.assert_array_equal(a.params["rna"].C, b.params["rna"].C)

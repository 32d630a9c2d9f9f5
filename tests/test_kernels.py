"""Every Numba kernel against a plain NumPy twin (STUMPY style), float32 and float64, int32 and int64 indices."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_csr

import naive

from fastjmt import kernels as kn

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _tall(rng, n, k, dtype):
    return np.ascontiguousarray(rng.normal(size=(n, k)), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("n_chunks", [1, 3, 64])
@pytest.mark.parametrize("block_cols", [1, 7, 80])
@pytest.mark.parametrize("every_column", [False, True])
def test_spmm_rows_matches_numpy(dtype, index_dtype, n_chunks, block_cols, every_column):
    rng = np.random.default_rng(0)
    X = random_csr(rng, 300, 80, 0.1, dtype, index_dtype)
    X = sp.diags((np.arange(300) != 5).astype(dtype)) @ X  # row 5 empty
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    X.indptr, X.indices = X.indptr.astype(index_dtype), X.indices.astype(index_dtype)
    assert X.indptr[6] == X.indptr[5]
    B = _tall(rng, 80, 6, dtype)
    rows = np.sort(rng.choice(300, 170, replace=False)).astype(np.int64)
    mask = (rng.random(80) < 0.6).astype(np.uint8)
    if every_column:  # an empty mask keeps every column
        mask = np.zeros(0, np.uint8)
    out = np.empty((rows.size, 6), dtype)
    kn.spmm_rows(X.indptr, X.indices, X.data, rows, mask, B, out, n_chunks, block_cols)
    expect = naive.spmm_rows(X.indptr, X.indices, X.data, rows, mask, B)
    np.testing.assert_allclose(out, expect, **TOL[dtype])


def test_spmm_rows_skewed_rows_and_thread_independence():
    rng = np.random.default_rng(1)
    dense = (rng.random((200, 500)) < 0.01).astype(np.float64)
    dense[7] = 1.0  # one row holds a large share of the nonzeros
    X = sp.csr_matrix(dense)
    B = _tall(rng, 500, 4, np.float64)
    rows = np.arange(200, dtype=np.int64)
    mask = np.ones(500, np.uint8)
    outs = []
    for n_chunks, block_cols in ((1, 500), (2, 500), (8, 500), (2, 33), (8, 1)):
        out = np.empty((200, 4))
        kn.spmm_rows(X.indptr, X.indices, X.data, rows, mask, B, out, n_chunks, block_cols)
        outs.append(out)
    np.testing.assert_allclose(outs[0], dense @ B, rtol=1e-12)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_nnz_balanced_bounds_cover_rows_in_order():
    indptr = np.array([0, 100, 101, 102, 103, 203, 204], dtype=np.int64)
    rows = np.arange(6, dtype=np.int64)
    for k in (1, 2, 3, 10):
        b = kn.nnz_balanced_bounds(indptr, rows, k)
        assert b[0] == 0 and b[-1] == 6
        assert np.all(np.diff(b) >= 0)
    # the split follows the nonzeros, not the row count: the two heavy rows (0 and 4) land in different chunks
    heavy = np.array([0, 5000, 5001, 5002, 5003, 10003, 10004], np.int64)
    b = kn.nnz_balanced_bounds(heavy, rows, 2)
    assert b.tolist() == [0, 3, 6]
    work = np.diff(heavy) + 1
    assert [work[b[i]:b[i + 1]].sum() for i in range(2)] == [5005, 5005]


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_row_sums(dtype):
    rng = np.random.default_rng(2)
    X = random_csr(rng, 50, 30, 0.2, dtype)
    rows = np.array([3, 1, 40, 7], dtype=np.int64)
    mask = (rng.random(30) < 0.5).astype(np.uint8)
    s, q = np.empty(4), np.empty(4)
    kn.masked_row_sums(X.indptr, X.indices, X.data, rows, mask, s, q, 4)
    s_e, q_e = naive.masked_row_sums(X.indptr, X.indices, X.data, rows, mask, 30)
    np.testing.assert_allclose(s, s_e, rtol=1e-6)
    np.testing.assert_allclose(q, q_e, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5000])
def test_reductions(dtype, n):
    rng = np.random.default_rng(3)
    A, B = _tall(rng, n, 5, dtype), _tall(rng, n, 3, dtype)
    w = rng.normal(size=n).astype(dtype)
    np.testing.assert_allclose(kn.cross_gram(A, B), naive.cross_gram(A, B), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(kn.cross_gram(A, w[:, None]), naive.cross_gram(A, w[:, None]), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_recon_grad_matches_formula(dtype):
    from fastjmt.objective import SideStats, recon_grad

    rng = np.random.default_rng(5)
    n, K = 40, 4
    XV, U = _tall(rng, n, K, dtype), _tall(rng, n, K, dtype)
    VtV, Vt1, ctV, b = rng.normal(size=(K, K)), rng.normal(size=K), rng.normal(size=K), rng.normal(size=n).astype(dtype)
    out = recon_grad(XV, U, SideStats(VtV, Vt1, ctV, 0.0, 0.0), b, 0.7)
    expect = 0.7 * (U @ VtV + np.outer(b, Vt1) + ctV[None, :] - XV)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expect, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("use_M", [True, False])
def test_logit_step_rows_matches_numpy(dtype, mode, use_M):
    """Plain descent (mode 0), Adam (1) and the gradient alone (2) against the NumPy twin."""
    rng = np.random.default_rng(10)
    n_all, K = 40, 5
    Z = _tall(rng, n_all, K, dtype)
    Z[3, 1] = 800.0  # overflow-prone without the max shift
    rows = np.array([0, 3, 9, 17, 30], dtype=np.int64)
    C = np.exp(Z[rows].astype(np.float64) - Z[rows].max(1, keepdims=True))
    C = (C / C.sum(1, keepdims=True)).astype(dtype)
    G, extra = _tall(rng, rows.size, K, dtype), _tall(rng, rows.size, K, dtype)
    M = _tall(rng, K, K, dtype)
    Mom, Var = np.abs(_tall(rng, n_all, K, dtype)) * 0.01, np.abs(_tall(rng, n_all, K, dtype)) * 0.01
    cols = np.array([1, 4], dtype=np.int64)
    args = (0.3, C, cols, 0.7, 0.05)
    expect, Z_e, Mom_e, Var_e = naive.logit_step_rows(G, M if use_M else None, extra, *args, Z, Mom, Var, rows, 0.05,
                                                0.9, 0.999, 1e-8, 3, mode)
    Z0, Mom0, Var0 = Z.copy(), Mom.copy(), Var.copy()
    out = np.empty((rows.size, K), dtype)
    kn.logit_step_rows(G, M if use_M else np.zeros((1, 1), dtype), use_M, extra, *args, Z, Mom, Var, rows, 0.05,
                       0.9, 0.999, 1e-8, 3, mode, True, out)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    if mode == 2:  # the gradient with respect to the logits; nothing else touched
        np.testing.assert_allclose(out, expect, **tol)
        for now, before in ((Z, Z0), (Mom, Mom0), (Var, Var0)):
            np.testing.assert_array_equal(now, before)
        return
    np.testing.assert_allclose(out, expect, **tol)
    np.testing.assert_allclose(Z, Z_e, **tol)
    np.testing.assert_allclose(Mom, Mom_e, **tol)
    untouched = np.setdiff1d(np.arange(n_all), rows)
    np.testing.assert_array_equal(Z[untouched], Z0[untouched])
    assert np.all(np.isfinite(out)) and np.allclose(out.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("every_column", [False, True])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_kernel_scatter_transpose_matches_gather(every_column, index_dtype):
    rng = np.random.default_rng(3)
    X = sp.random(300, 70, density=0.1, format="csr", random_state=3)
    X.indptr, X.indices = X.indptr.astype(index_dtype), X.indices.astype(index_dtype)
    rows = np.sort(rng.choice(300, 200, replace=False)).astype(np.int64)
    mask = (rng.random(70) < 0.7).astype(np.uint8)
    if every_column:  # an empty mask keeps every column
        mask = np.zeros(0, np.uint8)
    U = rng.normal(size=(200, 5))
    first = {}
    for n_chunks in (1, 3):
        for block_cols in (70, 9, 1):
            out = np.empty((70, 5))
            kn.spmm_t_rows(X.indptr, X.indices, X.data, rows, mask, U, out, n_chunks, block_cols)
            expect = naive.spmm_t_rows(X.indptr, X.indices, X.data, rows, mask, U, 70)
            np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)
            # column blocks change the visiting order, never the order of each output's sum
            np.testing.assert_array_equal(out, first.setdefault(n_chunks, out))


def test_column_block_fits_the_cache_and_caps_the_sweeps():
    from fastjmt.products import BLOCK_BYTES, column_block

    dense_rows = np.arange(0, 1001 * 4000, 4000, dtype=np.int64)  # 1000 rows of 4000 nonzeros
    assert column_block(dense_rows, 100_000, 20, 4) == BLOCK_BYTES // 80  # K = 20 float32 rows: 80 bytes each
    assert column_block(dense_rows, 100, 20, 4) == BLOCK_BYTES // 80  # more than p: one block
    sparse_rows = np.arange(0, 1001 * 16, 16, dtype=np.int32)  # 16 nonzeros per row: at most 2 sweeps
    assert column_block(sparse_rows, 100_000, 20, 8) == 50_000
    assert column_block(np.zeros(1, np.int64), 0, 4, 8) >= 1  # no rows, no columns


def test_kernel_mask_is_empty_only_when_every_column_is_kept():
    from fastjmt.products import kernel_mask

    assert kernel_mask(np.ones(5, np.uint8)).size == 0
    partial = np.array([1, 0, 1], np.uint8)
    assert kernel_mask(partial) is partial
    none_kept = np.zeros(4, np.uint8)  # keeps nothing: must stay a mask, not become "every column"
    assert kernel_mask(none_kept) is none_kept


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_logit_step_rows_on_a_plain_block_matches_numpy(dtype, mode):
    """``simplex=False`` (the association matrices): the same optimiser on the block itself, no softmax."""
    rng = np.random.default_rng(11)
    K = 5
    P, G = _tall(rng, K, K, dtype), _tall(rng, K, K, dtype)
    Mom, Var = np.abs(_tall(rng, K, K, dtype)) * 0.01, np.abs(_tall(rng, K, K, dtype)) * 0.01
    rows = np.arange(K, dtype=np.int64)
    P0, Mom0, Var0 = P.astype(np.float64), Mom.astype(np.float64), Var.astype(np.float64)
    out = np.empty((K, K), dtype)
    kn.logit_step_rows(G, np.zeros((1, 1), dtype), False, G, 0.0, P, np.zeros(0, np.int64), 0.0, 0.0, P, Mom, Var,
                       rows, 0.05, 0.9, 0.999, 1e-8, 3, mode, False, out)
    expect, P_e, Mom_e, Var_e = naive.logit_step_rows(G, None, G, 0.0, P0, np.zeros(0, np.int64), 0.0, 0.0, P0,
                                                      Mom0, Var0, rows, 0.05, 0.9, 0.999, 1e-8, 3, mode, simplex=False)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, expect, **tol)
    np.testing.assert_allclose(P, P_e, **tol)
    np.testing.assert_allclose(Mom, Mom_e, **tol)
    np.testing.assert_allclose(Var, Var_e, **tol)
    if mode == 2:  # the gradient alone: the block untouched
        np.testing.assert_array_equal(P, P0.astype(dtype))

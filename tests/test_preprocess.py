import numpy as np
import pytest
import scipy.sparse as sp

from fastjmt import preprocess as pp


def _m():
    return sp.csr_matrix(np.array([[0, 2, 2], [0, 0, 0], [1, 0, 3]], dtype=np.float64))


def test_to_csr_canonicalises_on_a_copy():
    coo = sp.coo_matrix((np.array([1.0, 2.0, 0.0]), (np.array([0, 0, 1]), np.array([2, 2, 0]))), shape=(2, 3))
    M = pp.to_csr(coo, dtype=np.float32)
    assert M.dtype == np.float32 and M.has_canonical_format and M.nnz == 1 and M[0, 2] == 3.0
    assert coo.nnz == 3  # caller's matrix untouched


def test_normalize_log1p_and_scale():
    X = _m()
    Y = pp.normalize_log1p(X, target_sum=4.0)
    expect = np.log1p(np.array([[0, 2, 2], [0, 0, 0], [1, 0, 3]]) / np.array([[4], [1], [4]]) * 4)
    np.testing.assert_allclose(Y.toarray(), expect)
    np.testing.assert_allclose(pp.scale_to_unit_max(Y).toarray(), expect / expect.max())
    assert X[0, 1] == 2  # input untouched
    Z = pp.preprocess_rna(X)
    assert Z.data.max() == 1.0 and Z.nnz == X.nnz


def test_binarize_and_normalize_rows():
    X = _m()
    np.testing.assert_array_equal(pp.binarize(X).toarray(), (X.toarray() > 0).astype(float))
    R = pp.normalize_rows(X).toarray()
    np.testing.assert_allclose(R.sum(1), [1, 0, 1])
    assert X.data.max() == 3  # input untouched


def test_in_place_when_asked():
    X = _m()
    Y = pp.binarize(X, copy=False)
    assert Y is X and X.data.max() == 1


def test_tfidf_matches_dense_formula():
    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [1, 1, 0]], dtype=np.float64))
    T = pp.tfidf(X).toarray()
    D = X.toarray()
    tf = D / np.maximum(D.sum(1, keepdims=True), 1e-300)
    idf = np.log1p(3 / (1 + D.sum(0)))  # a pseudo-count of 1 in the region total
    np.testing.assert_allclose(T, tf * idf)
    assert X[0, 2] == 2  # untouched


def test_select_variable_genes_prefers_variable_ones():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.poisson(5, size=(n, 30)).astype(float)
    groups = rng.integers(0, 2, n)
    base[:, 3] = np.where(groups == 1, rng.poisson(40, n), rng.poisson(1, n))  # a marker gene
    base[:, 7] = np.where(groups == 1, rng.poisson(1, n), rng.poisson(30, n))
    base[:, 12] = 0  # never expressed
    idx = pp.select_variable_genes(sp.csr_matrix(base), n_top=2)
    assert set(idx.tolist()) == {3, 7}
    assert 12 not in pp.select_variable_genes(sp.csr_matrix(base), n_top=100)


def test_select_accessible_regions():
    R = sp.csr_matrix(np.array([[1, 0, 1, 0], [1, 0, 1, 1], [1, 0, 0, 0]]))
    assert pp.select_accessible_regions(R, min_cells=2).tolist() == [0, 2]
    assert pp.select_accessible_regions(R, min_cells=1, n_top=2).tolist() == [0, 2]
    assert pp.select_accessible_regions(R).tolist() == [0, 2, 3]


def test_scale_rows_in_runs_matches_dense(monkeypatch):
    rng = np.random.default_rng(10)
    for dtype in (np.float32, np.float64):
        D = sp.random(60, 30, density=0.2, random_state=10, dtype=dtype).toarray()
        D[7] = 0  # an empty row
        D[3] = 1  # a heavy row
        X = sp.csr_matrix(D)
        scale = rng.random(60)
        expect = np.diag(scale.astype(dtype)) @ X.toarray()
        monkeypatch.setattr(pp, "_RUN_VALUES", 7)  # many runs, some of one row longer than a run
        pp.scale_rows(X, scale)
        assert X.data.dtype == dtype
        np.testing.assert_allclose(X.toarray(), expect, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("run_values", [7, 1 << 22])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_row_sums_in_runs_match_dense(monkeypatch, run_values, index_dtype):
    monkeypatch.setattr(pp, "_RUN_VALUES", run_values)  # 7: many runs, some of one row longer than a run
    for dtype in (np.float32, np.float64):
        D = sp.random(50, 40, density=0.15, random_state=11, dtype=dtype).toarray()
        D[0] = 0  # empty first row
        D[20:23] = 0  # empty rows inside
        D[5] = 2.5  # a heavy row
        D[-2:] = 0  # empty last rows
        X = sp.csr_matrix(D)
        sums, sq = pp.row_sums(X.indptr.astype(index_dtype), X.data)
        assert sums.dtype == sq.dtype == np.float64
        D64 = D.astype(np.float64)
        np.testing.assert_allclose(sums, D64.sum(axis=1), rtol=1e-13, atol=0)
        np.testing.assert_allclose(sq, (D64 ** 2).sum(axis=1), rtol=1e-13, atol=0)
        assert sums[0] == sums[21] == sums[-1] == 0.0


def test_row_sums_of_empty_matrix():
    sums, sq = pp.row_sums(np.zeros(4, np.int64), np.zeros(0, np.float32))
    assert sums.tolist() == sq.tolist() == [0.0, 0.0, 0.0]

"""Post-processing: the MNN kernel against a dense NumPy twin, mnn_correct, quantile normalisation."""

import numpy as np
import pytest

import fastjmt
from fastjmt import kernels as kn
from fastjmt.postprocess import _nearest


def mnn_reference(C_atac, C_rna, k):
    """Dense twin of mnn_correct: the full distance matrix, mutual k-NN sets, exp(-d²) weights."""
    D = np.sqrt(((C_atac[:, None, :] - C_rna[None, :, :]) ** 2).sum(-1))
    k_a, k_r = min(k, C_rna.shape[0]), min(k, C_atac.shape[0])
    nn_a = np.argsort(D, axis=1, kind="stable")[:, :k_a]  # RNA neighbours of each ATAC cell
    nn_r = np.argsort(D.T, axis=1, kind="stable")[:, :k_r]  # ATAC neighbours of each RNA cell
    out = C_atac.astype(np.float64).copy()
    n_mutual = np.zeros(C_atac.shape[0], dtype=np.int64)
    for p in range(C_atac.shape[0]):
        qs = [q for q in nn_a[p] if p in nn_r[q]]
        n_mutual[p] = len(qs)
        if qs:
            w = np.exp(-D[p, qs] ** 2)
            out[p] = (w[:, None] * C_rna[qs]).sum(0) / w.sum()
    return out, n_mutual


def _blobs(rng, n, centers, noise, dtype=np.float64):
    lab = rng.integers(0, len(centers), n)
    return (np.asarray(centers)[lab] + noise * rng.standard_normal((n, len(centers[0])))).astype(dtype), lab


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_mnn_average_kernel_matches_numpy(dtype, index_dtype):
    rng = np.random.default_rng(0)
    Ca, Cr = rng.random((70, 4)).astype(dtype), rng.random((90, 4)).astype(dtype)
    dist, a2r = _nearest(Cr, Ca, 6, 1)
    _, r2a = _nearest(Ca, Cr, 5, 1)
    out = np.empty_like(Ca)
    n_mutual = np.empty(70, dtype=np.int64)
    kn.mnn_average(Ca, Cr, a2r.astype(index_dtype), dist.astype(dtype), r2a.astype(index_dtype), out, n_mutual)
    # NumPy twin, with the same neighbour lists
    expect = Ca.astype(np.float64).copy()
    for p in range(70):
        qs = [(q, d) for q, d in zip(a2r[p], dist[p]) if p in r2a[q]]
        assert n_mutual[p] == len(qs)
        if qs:
            w = np.exp(-np.array([d for _, d in qs]) ** 2)
            expect[p] = (w[:, None] * Cr[[q for q, _ in qs]]).sum(0) / w.sum()
    assert 0 < (n_mutual > 0).sum() < 70  # both branches ran
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, expect, **tol)


@pytest.mark.parametrize("k", [1, 5, 200])
def test_mnn_correct_matches_dense_reference(k):
    rng = np.random.default_rng(1)
    Ca, Cr = rng.random((60, 3)), rng.random((80, 3))
    Ca0, Cr0 = Ca.copy(), Cr.copy()
    out, n_mutual = fastjmt.mnn_correct(Ca, Cr, n_neighbors=k)
    ref, ref_n = mnn_reference(Ca, Cr, k)
    np.testing.assert_array_equal(n_mutual, ref_n)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(Ca, Ca0)  # inputs untouched
    np.testing.assert_array_equal(Cr, Cr0)
    if k == 200:  # everyone is everyone's neighbour: every ATAC cell becomes a weighted mean of all RNA cells
        assert np.all(n_mutual == 80)


def test_mnn_correct_pulls_atac_onto_matching_rna_cluster():
    rng = np.random.default_rng(2)
    centers = np.eye(3)
    Cr, lr = _blobs(rng, 300, centers, 0.05)
    Ca, la = _blobs(rng, 300, centers + 0.15, 0.05)  # shifted ATAC clusters
    out, n_mutual = fastjmt.mnn_correct(Ca, Cr, n_neighbors=15)
    assert (n_mutual > 0).mean() > 0.2  # the ATAC cells on the near side of each shifted cluster
    moved = n_mutual > 0
    # a matched ATAC cell lands among the RNA cells of its own cluster
    d_own = np.linalg.norm(out[moved] - centers[la[moved]], axis=1)
    assert np.median(d_own) < np.median(np.linalg.norm(Ca[moved] - centers[la[moved]], axis=1))
    np.testing.assert_array_equal(out[~moved], Ca[~moved])


def test_mnn_correct_thread_independent_and_float32():
    rng = np.random.default_rng(3)
    Ca, Cr = rng.random((500, 5)).astype(np.float32), rng.random((400, 5)).astype(np.float32)
    a, na = fastjmt.mnn_correct(Ca, Cr, n_threads=1)
    b, nb = fastjmt.mnn_correct(Ca, Cr, n_threads=-1)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(na, nb)


@pytest.mark.parametrize("bad, match", [
    (dict(C_atac=np.zeros((3, 2)), C_rna=np.zeros((3, 3))), "same number of columns"),
    (dict(C_atac=np.zeros(3), C_rna=np.zeros((3, 3))), "2-D"),
    (dict(C_atac=np.full((3, 2), np.nan), C_rna=np.zeros((3, 2))), "NaN"),
    (dict(C_atac=np.zeros((3, 2)), C_rna=np.zeros((3, 2)), n_neighbors=0), "n_neighbors"),
    (dict(C_atac=np.zeros((0, 2)), C_rna=np.zeros((3, 2))), "at least one row"),
])
def test_mnn_correct_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        fastjmt.mnn_correct(**bad)


def test_quantile_normalize_matches_rna_quantiles_per_cluster():
    rng = np.random.default_rng(4)
    K = 3
    Cr = rng.dirichlet(np.ones(K) * 0.5, size=2000)
    Ca = rng.dirichlet(np.ones(K) * 0.5, size=1500) ** 2  # a different distribution per factor
    Cr0 = Cr.copy()
    r, a = fastjmt.quantile_normalize(Cr, Ca, n_quantiles=50)
    np.testing.assert_array_equal(r, Cr0)
    assert r is not Cr
    lab_r = np.argmax(Cr / np.sqrt(np.mean(Cr ** 2, 0)), 1)
    lab_a = np.argmax(Ca / np.sqrt(np.mean(Ca ** 2, 0)), 1)
    for c in range(K):
        for j in range(K):
            qa = np.quantile(a[lab_a == c, j], [0.1, 0.5, 0.9])
            qr = np.quantile(Cr[lab_r == c, j], [0.1, 0.5, 0.9])
            np.testing.assert_allclose(qa, qr, atol=0.03)
    # order within a cluster and factor is kept (the map is monotone)
    m = lab_a == 0
    assert np.all(np.diff(a[m, 1][np.argsort(Ca[m, 1], kind="stable")]) >= -1e-12)


def test_quantile_normalize_leaves_small_clusters_alone():
    rng = np.random.default_rng(5)
    Cr = np.r_[np.tile([1.0, 0.0], (50, 1)), np.tile([0.0, 1.0], (50, 1))] + rng.random((100, 2)) * 0.1
    Ca = np.r_[np.tile([1.0, 0.0], (5, 1)), np.tile([0.0, 1.0], (50, 1))] * 2 + rng.random((55, 2)) * 0.1
    _, a = fastjmt.quantile_normalize(Cr, Ca, min_cells=20)
    np.testing.assert_array_equal(a[:5], Ca[:5])  # 5 ATAC cells in cluster 0 < min_cells
    assert not np.allclose(a[5:], Ca[5:])
    with pytest.raises(ValueError, match="n_quantiles"):
        fastjmt.quantile_normalize(Cr, Ca, n_quantiles=1)

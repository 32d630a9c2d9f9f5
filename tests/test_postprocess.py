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


def test_rp_tree_leaves_partition_points():
    rng = np.random.default_rng(6)
    X = rng.random((1000, 5))
    X[:300] = X[0]  # 300 duplicates: a node that cannot be split by a hyperplane is halved
    leaf_of = np.empty(1000, dtype=np.int64)
    n_leaves = kn.rp_tree_leaves(X, 40, 7, leaf_of)
    sizes = np.bincount(leaf_of, minlength=n_leaves)
    assert sizes.size == n_leaves and sizes.sum() == 1000
    assert sizes.max() <= 40 and sizes.min() >= 1
    again = np.empty_like(leaf_of)
    assert kn.rp_tree_leaves(X, 40, 7, again) == n_leaves
    np.testing.assert_array_equal(leaf_of, again)  # same seed, same tree
    # nearby points tend to share a leaf: a leaf is much tighter than the whole set
    spread = np.mean([X[leaf_of == l].std(0).mean() for l in range(n_leaves) if sizes[l] > 5])
    assert spread < 0.6 * X[300:].std(0).mean()
    forest = np.empty((3, 1000), dtype=np.int64)
    counts = kn.rp_forest_leaves(X, 40, np.array([7, 8, 9]), forest)
    assert counts[0] == n_leaves
    np.testing.assert_array_equal(forest[0], leaf_of)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bipartite_knn_update_matches_numpy(dtype):
    rng = np.random.default_rng(7)
    A, B = rng.random((50, 3)).astype(dtype), rng.random((40, 3)).astype(dtype)
    leaf_of = rng.integers(0, 6, 90)  # an arbitrary partition of the 90 points into 6 leaves
    members = np.argsort(leaf_of, kind="stable")
    leaf_start = np.searchsorted(leaf_of[members], np.arange(7))
    k = 4
    a_dist, a_idx = np.full((50, k), np.inf, dtype), np.full((50, k), -1, np.int64)
    b_dist, b_idx = np.full((40, k), np.inf, dtype), np.full((40, k), -1, np.int64)
    for _ in range(2):  # a second pass offers the same pairs again: lists must not take duplicates
        kn.bipartite_knn_update(A, B, leaf_start, members, a_dist, a_idx, b_dist, b_idx)
    D = ((A[:, None].astype(np.float64) - B[None]) ** 2).sum(-1)
    same = leaf_of[:50, None] == leaf_of[None, 50:]
    Dm = np.where(same, D, np.inf)
    for P, dist, idx in ((Dm, a_dist, a_idx), (Dm.T, b_dist, b_idx)):
        for i in range(P.shape[0]):
            order = np.argsort(P[i], kind="stable")[:k]
            order = order[np.isfinite(P[i, order])]
            np.testing.assert_array_equal(idx[i, :order.size], order)
            assert np.all(idx[i, order.size:] == -1)
            np.testing.assert_allclose(dist[i, :order.size], P[i, order], rtol=1e-6)


def test_forest_with_one_leaf_is_exact_and_large_inputs_close_to_exact():
    from fastjmt.postprocess import cross_neighbors

    rng = np.random.default_rng(8)
    A, B = rng.random((200, 4)), rng.random((150, 4))
    d_ex, i_ex, b_ex = cross_neighbors(A, B, 5, 1, exact=True)
    d_f, i_f, b_f = cross_neighbors(A, B, 5, 1, exact=False, n_trees=1, leaf_size=1000)
    np.testing.assert_array_equal(i_f, i_ex)
    np.testing.assert_array_equal(b_f, b_ex)
    np.testing.assert_allclose(d_f, d_ex, rtol=1e-12)
    # many points: the default forest finds most exact neighbours
    centers = rng.dirichlet(np.ones(8), 8) * 3
    A = centers[rng.integers(0, 8, 3000)] + 0.1 * rng.standard_normal((3000, 8))
    B = centers[rng.integers(0, 8, 3000)] + 0.1 * rng.standard_normal((3000, 8))
    _, i_ex, _ = cross_neighbors(A, B, 10, 2, exact=True)
    _, i_f, _ = cross_neighbors(A, B, 10, 2, exact=False)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(i_ex, i_f)])
    assert recall > 0.9


def test_mnn_correct_approximate_search_agrees_with_exact():
    rng = np.random.default_rng(9)
    centers = np.eye(6)
    Cr, _ = _blobs(rng, 2000, centers, 0.1)
    Ca, _ = _blobs(rng, 2000, centers + 0.05, 0.1)
    exact, n_ex = fastjmt.mnn_correct(Ca, Cr, exact=True)
    approx, n_ap = fastjmt.mnn_correct(Ca, Cr, exact=False, random_state=3)
    again, _ = fastjmt.mnn_correct(Ca, Cr, exact=False, random_state=3)
    np.testing.assert_array_equal(approx, again)  # seeded
    assert np.mean(exact.argmax(1) == approx.argmax(1)) > 0.99
    assert np.abs(n_ex - n_ap).mean() < 2

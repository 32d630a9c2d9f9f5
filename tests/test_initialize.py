"""The spectral initialisation: implicit SVD, k-means and the RNA/ATAC cluster matching."""

import numpy as np
import pytest
import scipy.sparse as sp

from fastjmt.initialize import (depth_correlations, drop_depth_components, implicit_svd, kmeans, match_clusters,
                                nearest_centers)


def _block_matrix_and_dense_svd(rng):
    # five clear directions (block structure) plus sparse noise: a spectral gap after the fifth value
    groups = rng.integers(0, 6, 200)
    profiles = (rng.random((6, 60)) < 0.3) * 3.0
    X = sp.csr_matrix(profiles[groups]) + sp.random(200, 60, density=0.05, format="csr", random_state=1)
    r, w = rng.random(200) + 0.5, rng.random(60) + 0.5
    D = r[:, None] * X.toarray() * w[None, :]
    D -= D.mean(0)
    U, s, _ = np.linalg.svd(D, full_matrices=False)
    return X, r, w, U[:, :5], s[:5]


# all rows, then a random subset of 120 of the 200 rows (every row projected on the subset's right vectors)
@pytest.mark.parametrize("max_fit_rows, subspace_tol, value_rtol", [(20_000, 1e-2, 1e-3), (120, 5e-2, 1e-2)])
def test_implicit_svd_matches_dense_svd_of_the_scaled_centred_matrix(max_fit_rows, subspace_tol, value_rtol):
    rng = np.random.default_rng(0)
    X, r, w, Q, s = _block_matrix_and_dense_svd(rng)
    Xt = X.T.tocsr()
    emb = implicit_svd((X.indptr, X.indices, X.data), (Xt.indptr, Xt.indices, Xt.data), r, w, 5, rng,
                       n_power_iter=6, max_fit_rows=max_fit_rows)
    assert emb.shape == (200, 5)
    # same subspace (components with close singular values may mix inside it) and same singular values
    resid = emb - Q @ (Q.T @ emb)
    assert np.linalg.norm(resid) < subspace_tol * np.linalg.norm(emb)
    np.testing.assert_allclose(np.linalg.svd(emb, compute_uv=False), s, rtol=value_rtol)


def test_kmeans_finds_separated_blobs():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 3)) * 10
    truth = rng.integers(0, 4, 500)
    X = centers[truth] + rng.normal(size=(500, 3))
    lab = kmeans(X, 4, rng)
    # a perfect clustering up to renaming
    pairs = set(zip(truth.tolist(), lab.tolist()))
    assert len(pairs) == 4


def test_match_clusters_shared_then_specific_columns():
    corr = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.25]])  # RNA 3 clusters, ATAC 2
    rna_cols, atac_cols = match_clusters(corr, 2)
    # RNA 0 <-> ATAC 1 (0.9) takes column 0, RNA 1 <-> ATAC 0 takes column 1, RNA 2 is RNA-only (column 2)
    assert rna_cols.tolist() == [0, 1, 2] and atac_cols.tolist() == [1, 0]
    # both modalities with a specific cluster: columns 0 shared, 1 RNA-only, 2 ATAC-only
    rna_cols, atac_cols = match_clusters(np.array([[0.9, 0.1], [0.2, 0.3]]), 1)
    assert rna_cols.tolist() == [0, 1] and atac_cols.tolist() == [0, 2]


def test_kmeans_on_a_subset_for_many_rows():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 2)) * 10
    truth = rng.integers(0, 3, 3000)
    X = centers[truth] + rng.normal(size=(3000, 2))
    lab = kmeans(X, 3, rng, max_fit_rows=500)
    assert lab.shape == (3000,) and len(set(zip(truth.tolist(), lab.tolist()))) == 3


def test_nearest_centers_matches_brute_force_in_chunks():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(300, 4))
    centers = rng.normal(size=(5, 4))
    labels, d2 = np.empty(300, np.int64), np.empty(300)
    nearest_centers(X, centers, labels, d2, chunk=64)
    D = ((X[:, None, :] - centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, D.argmin(1))
    np.testing.assert_allclose(d2, D.min(1), rtol=1e-10, atol=1e-12)
    nearest_centers(centers, centers, labels[:5], d2[:5])  # a point on its own centre: distance 0, not below
    assert labels[:5].tolist() == [0, 1, 2, 3, 4] and np.all(d2[:5] >= 0) and np.all(d2[:5] < 1e-12)


def test_drop_depth_components_leaves_out_the_column_that_follows_log_depth():
    rng = np.random.default_rng(3)
    depth = rng.lognormal(7.0, 0.5, 400).round()
    types = np.repeat(np.eye(3), [150, 150, 100], axis=0) * 2.0
    emb = np.column_stack([np.log1p(depth) + 0.01 * rng.normal(size=400), types + rng.normal(size=(400, 3)) * 0.1])
    r = depth_correlations(emb, depth)
    assert r[0] > 0.99 and np.all(r[1:] < 0.2)
    np.testing.assert_array_equal(drop_depth_components(emb, depth), emb[:, 1:])
    np.testing.assert_array_equal(drop_depth_components(emb, depth, max_corr=1.0), emb)  # nothing above 1
    # fewer than two columns would be left: all are kept; a constant depth correlates with nothing
    assert drop_depth_components(emb[:, :2], depth).shape[1] == 2
    np.testing.assert_array_equal(depth_correlations(emb, np.full(400, 5.0)), 0.0)

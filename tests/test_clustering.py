"""Cell clusters from the factors: argmax and graph communities, the k-NN edges against brute force."""

import numpy as np
import pytest

import fastjmt
from fastjmt.clustering import knn_edges


def test_knn_edges_match_brute_force():
    rng = np.random.default_rng(0)
    E = rng.random((120, 3))
    edges = knn_edges(E, n_neighbors=4)
    D = ((E[:, None] - E[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :4]
    expect = {(min(i, j), max(i, j)) for i in range(120) for j in nn[i]}
    assert set(map(tuple, edges.tolist())) == expect
    assert np.all(edges[:, 0] < edges[:, 1])


def test_argmax_labels():
    Cr = np.array([[0.1, 0.9], [0.8, 0.2]])
    Ca = np.array([[0.6, 0.4]])
    lr, la = fastjmt.cluster_cells(Cr, Ca)
    np.testing.assert_array_equal(lr, [1, 0])
    np.testing.assert_array_equal(la, [0])


@pytest.mark.parametrize("method", ["leiden", "louvain"])
def test_graph_communities_join_modalities(method):
    pytest.importorskip("igraph")
    rng = np.random.default_rng(1)
    centers = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]], dtype=float)
    tr, ta = rng.integers(0, 4, 400), rng.integers(0, 4, 300)
    Er = centers[tr] + rng.standard_normal((400, 3)) * 0.3
    Ea = centers[ta] + rng.standard_normal((300, 3)) * 0.3
    lr, la = fastjmt.cluster_cells(Er, Ea, method=method, resolution=0.5, random_state=0)
    s = fastjmt.integration_scores(tr, ta, lr, la)
    assert s["ari_pooled"] > 0.99
    # same seed, same labels; labels numbered by decreasing cluster size
    lr2, la2 = fastjmt.cluster_cells(Er, Ea, method=method, resolution=0.5, random_state=0)
    np.testing.assert_array_equal(lr, lr2)
    np.testing.assert_array_equal(la, la2)
    sizes = np.bincount(np.r_[lr, la])
    assert np.all(np.diff(sizes) <= 0)


@pytest.mark.parametrize("kw, match", [
    (dict(method="kmeans"), "method"),
    (dict(method="leiden", resolution=0), "resolution"),
    (dict(method="leiden", n_neighbors=0), "n_neighbors"),
])
def test_cluster_cells_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        fastjmt.cluster_cells(np.zeros((3, 2)), np.zeros((3, 2)), **kw)

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


# --------------------------------------------------------------------------- column merge


def _two_cliques(n=4, bridge=0.1):
    W = np.zeros((2 * n, 2 * n))
    W[:n, :n] = 1.0
    W[n:, n:] = 1.0
    np.fill_diagonal(W, 0.0)
    W[0, n] = W[n, 0] = bridge
    return W


def test_louvain_small_finds_two_cliques_and_respects_groups_and_resolution():
    from fastjmt.clustering import louvain_small

    W = _two_cliques()
    assert louvain_small(W, np.zeros(8, np.int64)).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # a low resolution merges them; groups keep nodes apart whatever the resolution
    assert louvain_small(W, np.zeros(8, np.int64), resolution=0.01).tolist() == [0] * 8
    groups = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    lab = louvain_small(W, groups, resolution=0.01)
    assert all(len(set(groups[lab == c])) == 1 for c in np.unique(lab))
    # no edges: every node alone
    assert louvain_small(np.zeros((3, 3)), np.zeros(3, np.int64)).tolist() == [0, 1, 2]


def test_louvain_small_reaches_igraphs_modularity():
    igraph = pytest.importorskip("igraph")
    from fastjmt.clustering import _modularity, louvain_small

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = 12
        blocks = rng.integers(0, 3, n)
        P = np.where(blocks[:, None] == blocks[None, :], 0.8, 0.15)
        W = np.triu((rng.random((n, n)) < P) * rng.random((n, n)), 1)
        W = W + W.T
        ours = _modularity(W, louvain_small(W, np.zeros(n, np.int64)), 1.0)
        g = igraph.Graph.Weighted_Adjacency(W.tolist(), mode="undirected", loops=False)
        best = max(g.community_multilevel(weights="weight").q for _ in range(5))
        assert ours >= best - 0.02, (trial, ours, best)


def _programs_with_split_type(rng, n=150):
    """Two true types; type 0 is split over columns 0 and 1 (same programs), type 1 sits in column 2."""
    centre = np.array([[3.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    t_r, t_a = rng.integers(0, 2, n), rng.integers(0, 2, n)
    P_r = centre[t_r] + rng.normal(size=(n, 3)) * 0.3
    P_a = centre[t_a] + rng.normal(size=(n, 3)) * 0.3
    col = lambda t: np.where(t == 1, 2, rng.integers(0, 2, t.size))  # noqa: E731
    return P_r, P_a, col(t_r), col(t_a), t_r, t_a


def test_merge_columns_joins_a_type_split_over_two_columns():
    from fastjmt.clustering import merge_columns

    rng = np.random.default_rng(1)
    P_r, P_a, c_r, c_a, t_r, t_a = _programs_with_split_type(rng)
    cc = merge_columns(P_r, P_a, c_r, c_a, 3)
    assert cc.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(cc[c_r], t_r)
    np.testing.assert_array_equal(cc[c_a], t_a)


def test_merge_columns_never_merges_a_private_column_with_a_shared_one():
    from fastjmt.clustering import merge_columns

    rng = np.random.default_rng(2)
    P_r, P_a, c_r, c_a, _, _ = _programs_with_split_type(rng)
    # layout 2 shared + 1 RNA-only: RNA type 0 split over column 0 and the RNA-only column 2, type 1 in column 1;
    # the RNA-only column looks like column 0 but must stay a cluster of its own
    P_r, P_a = P_r[:, [0, 2, 1]], P_a[:, [0, 2, 1]]
    c_r = np.array([0, 2, 1])[c_r]
    c_a = np.array([0, 0, 1])[c_a]
    cc = merge_columns(P_r, P_a, c_r, c_a, 2, n_rna_only=1)
    assert cc.tolist() == [0, 1, 2]
    # declared shared, the same column merges with column 0
    assert merge_columns(P_r, P_a, c_r, c_a, 3).tolist() == [0, 1, 0]


@pytest.mark.parametrize("kw, match", [
    (dict(columns_rna=np.zeros(5, np.int64)), "columns_rna"),
    (dict(columns_atac=np.full(150, 3)), "columns_atac"),
    (dict(n_shared=2), "must equal"),
    (dict(resolution=0.0), "resolution"),
])
def test_merge_columns_bad_input(kw, match):
    from fastjmt.clustering import merge_columns

    P_r, P_a, c_r, c_a, _, _ = _programs_with_split_type(np.random.default_rng(3))
    args = dict(programs_rna=P_r, programs_atac=P_a, columns_rna=c_r, columns_atac=c_a, n_shared=3)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        merge_columns(**args)

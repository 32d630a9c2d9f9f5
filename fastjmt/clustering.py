"""Cell clusters from the factors: argmax (the paper) or communities of a joint k-nearest-neighbour graph.

Argmax gives at most K clusters with the column layout of the fit (shared,
RNA-only, ATAC-only). Leiden or Louvain on the k-nearest-neighbour graph of
the RNA and ATAC rows together finds clusters without that limit (data whose
types outnumber K, or types split over several columns); it needs the
optional dependency ``igraph`` (``pip install "fastjmt[cluster]"``).
"""

from __future__ import annotations

import random
from typing import Optional, Tuple

import numpy as np

from .postprocess import _check_pair, cross_neighbors
from ._threads import resolve_n_threads
from .validation import check_count, check_positive

__all__ = ["cluster_cells", "knn_edges", "merge_columns", "louvain_small"]

METHODS = ("argmax", "leiden", "louvain")


def knn_edges(E, n_neighbors: int = 15, n_threads: Optional[int] = None) -> np.ndarray:
    """Undirected edges of the k-nearest-neighbour graph of the rows of ``E`` (self loops dropped).

    Returns an int64 array of shape (n_edges, 2) with ``i < j`` in every row and
    no duplicate; O(n · n_neighbors) memory. The neighbours are exact (KD-tree)
    up to 5,000 rows and approximate above (random-projection forest, as in
    :func:`fastjmt.mnn_correct`).
    """
    E = np.ascontiguousarray(E)
    n = E.shape[0]
    _, idx, _ = cross_neighbors(E, E, min(int(n_neighbors) + 1, n), resolve_n_threads(n_threads), both=False)
    src = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    dst = idx.ravel()
    keep = (src != dst) & (dst >= 0)
    lo, hi = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    key = np.unique(lo * n + hi)  # one int64 per undirected edge: a 1-D unique is much faster than rows
    return np.stack([key // n, key % n], axis=1)


def _igraph():
    try:
        import igraph
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("graph clustering needs igraph: pip install 'fastjmt[cluster]' "
                          "(or: pip install igraph)") from e
    return igraph


def _communities(edges: np.ndarray, n: int, method: str, resolution: float, seed: int) -> np.ndarray:
    igraph = _igraph()
    g = igraph.Graph(n=n, edges=edges, directed=False)
    # igraph draws from a Python random generator; give it a seeded one and put the old one back
    igraph.set_random_number_generator(random.Random(seed))
    try:
        if method == "leiden":
            part = g.community_leiden(objective_function="modularity", resolution=resolution, n_iterations=2)
        else:
            part = g.community_multilevel(resolution=resolution)
    finally:
        igraph.set_random_number_generator(random)
    labels = np.asarray(part.membership, dtype=np.int64)
    # number communities by decreasing size (ties: by first cell), so labels do not depend on igraph's order
    sizes = np.bincount(labels)
    first = np.full(sizes.size, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    order = np.lexsort((first, -sizes))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels]


def cluster_cells(C_rna, C_atac, method: str = "argmax", n_neighbors: int = 15, resolution: float = 1.0,
                  random_state: int = 0, n_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Cluster labels of the RNA and the ATAC cells, in one labelling.

    Parameters
    ----------
    C_rna, C_atac : array-like, shape (n_rna, K) and (n_atac, K)
        Cell factors or any embedding with the same columns (e.g. after
        :func:`fastjmt.mnn_correct` or :func:`fastjmt.quantile_normalize`).
    method : {"argmax", "leiden", "louvain"}
        ``"argmax"``: the column of each row's largest value (the paper's
        clusters). ``"leiden"`` / ``"louvain"``: modularity communities of the
        k-nearest-neighbour graph of all cells of both modalities (igraph).
    n_neighbors : int, default 15
        Neighbours per cell in the graph.
    resolution : float, default 1.0
        Modularity resolution (larger: more, smaller clusters).
    random_state : int, default 0
        Seed of the community search (same seed, same labels).
    n_threads : int, optional
        Threads of the neighbour search.

    Returns
    -------
    labels_rna, labels_atac : ndarray of int64
        Graph communities are numbered by decreasing size.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    C_rna, C_atac = _check_pair(C_rna, C_atac, "C_rna", "C_atac")
    if method == "argmax":
        return np.argmax(C_rna, axis=1).astype(np.int64), np.argmax(C_atac, axis=1).astype(np.int64)
    n_neighbors = check_count(n_neighbors, "n_neighbors", 1)
    resolution = check_positive(resolution, "resolution")
    E = np.vstack([C_rna, C_atac])
    edges = knn_edges(E, n_neighbors, n_threads)
    labels = _communities(edges, E.shape[0], method, resolution, int(random_state))
    n_rna = C_rna.shape[0]
    return labels[:n_rna], labels[n_rna:]


# --------------------------------------------------------------------------- column merge (the default labels)


def _modularity(W: np.ndarray, comm: np.ndarray, resolution: float) -> float:
    """Newman's modularity of a weighted undirected graph (adjacency ``W``, self-loops on the diagonal)."""
    two_m = W.sum()
    if two_m <= 0:
        return 0.0
    k = W.sum(axis=1)
    q = 0.0
    for c in np.unique(comm):
        inside = comm == c
        q += W[np.ix_(inside, inside)].sum() / two_m - resolution * (k[inside].sum() / two_m) ** 2
    return float(q)


def louvain_small(W: np.ndarray, groups: np.ndarray, resolution: float = 1.0) -> np.ndarray:
    """Louvain modularity communities of a small weighted graph, nodes merging only within their group.

    Blondel et al. (J. Stat. Mech. 2008): each node in turn moves to the
    neighbouring community that raises the modularity most (nodes in index
    order, ties to the lower community index, so the result is deterministic),
    until no move helps; then the communities become nodes and the same
    repeats. A node only ever joins a community of its own ``groups`` value.
    Dense ``W`` (nodes × nodes): meant for graphs of a few hundred nodes, such
    as the K columns of a fit.

    Parameters
    ----------
    W : ndarray, shape (n, n)
        Symmetric nonnegative edge weights; the diagonal holds each node's
        internal weight (twice its self-loop weight, as in ``A + Aᵀ``).
    groups : ndarray of int, shape (n,)
        Nodes of different groups never share a community.
    resolution : float
        Modularity resolution γ (larger: more, smaller communities).

    Returns
    -------
    ndarray of int64, shape (n,)
        Community of each node, numbered by its lowest node index.
    """
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    node_comm = np.arange(n)
    two_m = W.sum()
    if two_m <= 0 or n < 2:
        return node_comm.astype(np.int64)
    Wl, gl = W.copy(), np.asarray(groups).copy()
    while True:
        m = Wl.shape[0]
        comm = np.arange(m)
        k = Wl.sum(axis=1)
        tot = k.copy()  # total degree per community
        moved_any, improved = False, True
        while improved:
            improved = False
            for i in range(m):
                ci = comm[i]
                tot[ci] -= k[i]
                links = np.bincount(comm, weights=Wl[i], minlength=m) - np.where(np.arange(m) == ci, Wl[i, i], 0.0)
                # gain of putting i into community c (up to a constant): links_c − γ k_i tot_c / 2m
                gain = links - resolution * k[i] * tot / two_m
                allowed = np.zeros(m, dtype=bool)
                allowed[np.unique(comm[gl == gl[i]])] = True
                allowed &= (links > 0) | (np.arange(m) == ci)
                gain[~allowed] = -np.inf
                best = int(np.argmax(gain))  # first maximum: the lowest index on ties
                if gain[best] > gain[ci] + 1e-12 * two_m:
                    comm[i] = best
                    improved = moved_any = True
                tot[comm[i]] += k[i]
        if not moved_any:
            break
        _, comm = np.unique(comm, return_inverse=True)
        c = comm.max() + 1
        H = np.zeros((m, c))
        H[np.arange(m), comm] = 1.0
        Wl = H.T @ Wl @ H
        gl = np.array([gl[comm == j][0] for j in range(c)])
        node_comm = comm[node_comm]
    # number communities by their lowest node
    first = np.full(node_comm.max() + 1, n)
    np.minimum.at(first, node_comm, np.arange(n))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[node_comm].astype(np.int64)


def _standardize_columns(P: np.ndarray) -> np.ndarray:
    mu = P.mean(axis=0)
    sd = P.std(axis=0)
    return (P - mu) / np.where(sd > 0, sd, 1.0)


def merge_columns(programs_rna, programs_atac, columns_rna, columns_atac, n_shared: int, n_rna_only: int = 0,
                  n_atac_only: int = 0, *, resolution: float = 1.0, n_neighbors: int = 15, random_state: int = 0,
                  n_threads: Optional[int] = None) -> np.ndarray:
    """Which of a fit's K columns belong to one cell cluster: the default labels of :func:`fastjmt.fit`.

    Argmax over K columns splits a large cell type over several columns the way
    k-means would; graph communities of the cells ignore the columns and break
    unequal compositions. This merges whole columns instead:

    1. each modality's program activities (cells × K) are standardised per
       program, on that modality's cells;
    2. one ``n_neighbors``-nearest-neighbour graph joins the cells of both
       modalities (:func:`knn_edges`);
    3. the graph is contracted to one node per column (each cell is its argmax
       column; edges inside a column become self-loops);
    4. Louvain modularity communities of that K-node graph
       (:func:`louvain_small`, ``resolution``), where shared columns merge only
       with shared columns and a modality's private columns only with that
       modality's private columns.

    Columns merge whole, never split, and a cell never lands in a cluster its
    modality's columns do not allow. Measured on the shared datasets and the
    package's simulator in docs/quality.md.

    Parameters
    ----------
    programs_rna, programs_atac : array-like, shapes (n_rna, K) and (n_atac, K)
        Program activities (``JMTResult.programs_rna`` / ``programs_atac``).
    columns_rna, columns_atac : array-like of int, shapes (n_rna,) and (n_atac,)
        Each cell's column (``JMTResult.columns_rna`` / ``columns_atac``).
    n_shared, n_rna_only, n_atac_only : int
        The fit's column layout.
    resolution : float, default 1.0
        Modularity resolution: lower merges more columns. 1.0 is the standard
        modularity; see docs/quality.md for 0.5.
    n_neighbors : int, default 15
        Neighbours per cell in the graph.
    random_state : int, default 0
        Seed of the approximate neighbour search (large inputs).
    n_threads : int, optional
        Threads of the neighbour search (default: all).

    Returns
    -------
    ndarray of int64, shape (K,)
        The cluster of each column, numbered by its lowest column (so shared
        clusters come first); ``labels = result[columns]``.

    Raises
    ------
    ValueError
        On arrays of the wrong shape or columns outside ``0 … K−1``.
    """
    P_r, P_a = _check_pair(programs_rna, programs_atac, "programs_rna", "programs_atac")
    K = P_r.shape[1]
    if n_shared + n_rna_only + n_atac_only != K:
        raise ValueError(f"n_shared + n_rna_only + n_atac_only must equal the {K} program columns")
    resolution = check_positive(resolution, "resolution")
    n_neighbors = check_count(n_neighbors, "n_neighbors", 1)
    cols = []
    for c, P, name in ((columns_rna, P_r, "columns_rna"), (columns_atac, P_a, "columns_atac")):
        c = np.asarray(c)
        bad = c.shape != (P.shape[0],) or not np.issubdtype(c.dtype, np.integer)
        if bad or (c.size and (c.min() < 0 or c.max() >= K)):
            raise ValueError(f"{name} must hold one column in 0 … {K - 1} per cell ({P.shape[0]} cells)")
        cols.append(c.astype(np.int64))
    groups = np.r_[np.zeros(n_shared), np.ones(n_rna_only), np.full(n_atac_only, 2)].astype(np.int64)
    return merge_column_groups([P_r, P_a], cols, groups, resolution, n_neighbors, n_threads)


def merge_column_groups(programs: list, columns: list, groups: np.ndarray, resolution: float = 1.0,
                        n_neighbors: int = 15, n_threads: Optional[int] = None) -> np.ndarray:
    """:func:`merge_columns` for any number of cell sets (checked inputs): ``programs[i]`` (cells × K) are
    standardised per set, ``columns[i]`` their cells' columns; columns merge only within the same
    ``groups`` value (0 shared; one value per owner of private columns). Returns the cluster of each column."""
    K = programs[0].shape[1]
    E = np.vstack([_standardize_columns(P) for P in programs])
    node = np.concatenate(columns)
    edges = knn_edges(E, n_neighbors, n_threads)
    a, b = node[edges[:, 0]], node[edges[:, 1]]
    W = np.bincount(a * K + b, minlength=K * K).reshape(K, K).astype(np.float64)
    W = W + W.T
    return louvain_small(W, groups, resolution)

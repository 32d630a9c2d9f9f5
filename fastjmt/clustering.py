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

__all__ = ["cluster_cells", "knn_edges"]

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
        raise ImportError("graph clustering needs igraph: pip install 'fastjmt[cluster]' (or: pip install igraph)") from e
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

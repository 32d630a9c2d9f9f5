"""After the fit: matching the two modalities' cell factors (mutual nearest neighbours, quantile normalisation).

Both functions take and return plain arrays (rows are cells, columns the K
factors), so they work on ``JMTResult.C_atac`` / ``C_rna``, on
``programs_atac`` / ``programs_rna`` or on any other pair of embeddings with
the same columns.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._threads import fit_threads, resolve_n_threads
from .validation import check_count

__all__ = ["mnn_correct", "quantile_normalize"]


def _check_pair(A, B, name_a: str, name_b: str):
    """Two 2-D finite float arrays with the same number of columns (C-contiguous copies only when needed)."""
    out = []
    for X, name in ((A, name_a), (B, name_b)):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (cells × factors), got shape {X.shape}")
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"{name} must have at least one row and one column, got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float64)
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{name} contains NaN or infinite values")
        out.append(np.ascontiguousarray(X))
    A, B = out
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same number of columns, "
                         f"got {A.shape[1]} and {B.shape[1]}")
    dtype = np.result_type(A.dtype, B.dtype)
    return A.astype(dtype, copy=False), B.astype(dtype, copy=False)


#: above this many (query, point) pairs the neighbour search is approximate (random-projection forest)
EXACT_MAX_PAIRS = 25_000_000


def _nearest(points, queries, k: int, workers: int):
    """The ``k`` nearest ``points`` of each query row, exactly (KD-tree; fine for small inputs)."""
    from scipy.spatial import cKDTree

    k = min(k, points.shape[0])
    dist, idx = cKDTree(points).query(queries, k=k, workers=workers)
    if k == 1:
        dist, idx = dist[:, None], idx[:, None]
    return np.ascontiguousarray(dist), np.ascontiguousarray(idx, dtype=np.int64)


def _forest_neighbors(A, B, k_a: int, k_b: int, n_trees: int, leaf_size: int, seed: int):
    """Approximate k-nearest lists across two point sets with a random-projection forest.

    The rows of both sets go into ``n_trees`` random-projection trees (leaves of at
    most ``leaf_size`` points); every A–B pair that shares a leaf in some tree is
    measured, and each point keeps its nearest ones. Time O(n_trees · n · (log n +
    leaf_size) · d), memory O(n · (k + n_trees)). Slots that no candidate filled
    hold index −1 and distance inf.

    Returns
    -------
    a_dist, a_idx : (n_a, k_a) euclidean distances and indices into B, ascending
    b_dist, b_idx : (n_b, k_b) the same from B into A
    """
    from .kernels import bipartite_knn_update, rp_forest_leaves

    X = np.ascontiguousarray(np.vstack([A, B]))
    n = X.shape[0]
    a_dist = np.full((A.shape[0], k_a), np.inf, dtype=A.dtype)
    a_idx = np.full((A.shape[0], k_a), -1, dtype=np.int64)
    b_dist = np.full((B.shape[0], k_b), np.inf, dtype=A.dtype)
    b_idx = np.full((B.shape[0], k_b), -1, dtype=np.int64)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=n_trees)
    # trees in batches, so that the leaf arrays stay O(n · batch)
    batch = 4
    for start in range(0, n_trees, batch):
        s = seeds[start:start + batch]
        leaf_of = np.empty((s.size, n), dtype=np.int64)
        n_leaves = rp_forest_leaves(X, leaf_size, s, leaf_of)
        for t in range(s.size):
            members = np.argsort(leaf_of[t], kind="stable")
            leaf_start = np.searchsorted(leaf_of[t][members], np.arange(n_leaves[t] + 1))
            bipartite_knn_update(A, B, leaf_start, members, a_dist, a_idx, b_dist, b_idx)
    return np.sqrt(a_dist), a_idx, np.sqrt(b_dist), b_idx


def cross_neighbors(A, B, k: int, n_threads: int, exact: Optional[bool] = None, n_trees: int = 16,
                    leaf_size: int = 128, seed: int = 0, both: bool = True):
    """k-nearest lists both ways between two point sets: exact when small, a random-projection forest when large.

    ``exact=None`` chooses: exact (KD-trees) when ``n_a · n_b`` is at most
    ``EXACT_MAX_PAIRS``, else the forest (recall about 0.97 of the exact lists at
    the default ``n_trees=16, leaf_size=128``, measured on 30,000 simplex rows
    with K = 20: benchmarks/mnn_scale.py).

    Returns
    -------
    a_dist, a_idx : the ``k`` nearest rows of B of each row of A (−1: none found)
    b_idx : the ``k`` nearest rows of A of each row of B (None when ``both`` is False and the
        search is exact; the forest finds both directions at once)
    """
    if exact is None:
        exact = A.shape[0] * B.shape[0] <= EXACT_MAX_PAIRS
    if exact:
        a_dist, a_idx = _nearest(B, A, k, n_threads)
        b_idx = _nearest(A, B, k, n_threads)[1] if both else None
        return a_dist, a_idx, b_idx
    with fit_threads(n_threads):
        a_dist, a_idx, _, b_idx = _forest_neighbors(A, B, min(k, B.shape[0]), min(k, A.shape[0]), n_trees,
                                                    leaf_size, seed)
    return a_dist, a_idx, b_idx


def mnn_correct(C_atac, C_rna, n_neighbors: int = 20, n_threads: Optional[int] = None,
                exact: Optional[bool] = None, random_state: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Move each ATAC cell to the weighted mean of its mutual nearest RNA neighbours.

    The paper's post-processing for real data (docs/model.md, "After the fit"):
    ATAC cell ``p`` and RNA cell ``q`` are mutual neighbours when each is among
    the other's ``n_neighbors`` nearest cells of the other modality, and the pair
    weighs ``W_pq = exp(−|C_atac[p] − C_rna[q]|²)``. Every ATAC cell with at
    least one mutual neighbour becomes ``Σ_q W_pq C_rna[q] / Σ_q W_pq``; cells
    with none keep their row.

    No cells × cells distance matrix is formed: memory is O(n · n_neighbors).
    Up to ``n_atac · n_rna = 2.5 · 10^7`` pairs the neighbours are exact
    (KD-trees); above, they come from a random-projection forest (16 trees,
    leaves of 128 cells; time O(n log n), about 97 % of the exact neighbours;
    KD-trees in K ≈ 20 dimensions degrade to worse than quadratic time).

    Parameters
    ----------
    C_atac, C_rna : array-like, shape (n_atac, K) and (n_rna, K)
        Cell factors (e.g. ``result.C_atac`` and ``result.C_rna``).
    n_neighbors : int, default 20
        Neighbours searched in each direction.
    n_threads : int, optional
        Threads for the neighbour search and the averaging (default: all).
    exact : bool, optional
        Force the exact (True) or the approximate (False) neighbour search.
    random_state : int, default 0
        Seed of the random-projection forest (same seed, same result).

    Returns
    -------
    C_atac_corrected : ndarray, shape (n_atac, K)
        New array; the inputs are not modified.
    n_mutual : ndarray of int64, shape (n_atac,)
        Mutual neighbours found for each ATAC cell (0: row kept).

    Examples
    --------
    >>> C_atac_mnn, n_mutual = fastjmt.mnn_correct(res.C_atac, res.C_rna)  # doctest: +SKIP
    >>> labels_atac = C_atac_mnn.argmax(axis=1)                             # doctest: +SKIP
    """
    n_neighbors = check_count(n_neighbors, "n_neighbors", 1)
    C_atac, C_rna = _check_pair(C_atac, C_rna, "C_atac", "C_rna")
    threads = resolve_n_threads(n_threads)
    from .kernels import mnn_average

    atac_to_rna_dist, atac_to_rna, rna_to_atac = cross_neighbors(C_atac, C_rna, n_neighbors, threads, exact,
                                                                 seed=int(random_state))
    out = np.empty_like(C_atac)
    n_mutual = np.empty(C_atac.shape[0], dtype=np.int64)
    with fit_threads(threads):
        mnn_average(C_atac, C_rna, atac_to_rna, atac_to_rna_dist.astype(C_atac.dtype, copy=False),
                    rna_to_atac, out, n_mutual)
    return out, n_mutual


def quantile_normalize(C_rna, C_atac, n_quantiles: int = 50, min_cells: int = 20
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """LIGER-style quantile normalisation of the ATAC cell factors onto the RNA ones.

    Each cell is assigned to the factor with its largest (column-scaled) value,
    as LIGER does. Within every such cluster that holds at least ``min_cells``
    cells in both modalities, each factor's ATAC values are mapped through the
    quantile function: an ATAC value at quantile ``u`` of its cluster's ATAC
    distribution (``n_quantiles`` knots, linear in between) becomes the RNA
    value at quantile ``u`` of the same cluster. RNA is the reference and comes
    back unchanged; cells of clusters too small in either modality keep their
    values.

    Parameters
    ----------
    C_rna, C_atac : array-like, shape (n_rna, K) and (n_atac, K)
    n_quantiles : int, default 50
        Knots of the quantile functions (LIGER's default).
    min_cells : int, default 20
        Clusters with fewer cells in either modality are left alone.

    Returns
    -------
    C_rna_normalized, C_atac_normalized : ndarray
        New arrays; the RNA one is a copy of the input.
    """
    n_quantiles = check_count(n_quantiles, "n_quantiles", 2)
    min_cells = check_count(min_cells, "min_cells", 1)
    C_atac, C_rna = _check_pair(C_atac, C_rna, "C_atac", "C_rna")

    def clusters(C):
        scale = np.sqrt(np.mean(C * C, axis=0))
        scale[scale == 0] = 1.0
        return np.argmax(C / scale, axis=1)

    lab_r, lab_a = clusters(C_rna), clusters(C_atac)
    out = C_atac.copy()
    knots = np.linspace(0.0, 1.0, n_quantiles)
    for c in range(C_rna.shape[1]):
        in_r, in_a = lab_r == c, lab_a == c
        if in_r.sum() < min_cells or in_a.sum() < min_cells:
            continue
        ref = np.quantile(C_rna[in_r], knots, axis=0)  # n_quantiles × K
        src = np.quantile(C_atac[in_a], knots, axis=0)
        block = C_atac[in_a]
        for j in range(C_rna.shape[1]):
            xp, fp = src[:, j], ref[:, j]
            if xp[-1] > xp[0]:
                # merge tied knots so that np.interp sees a strictly increasing abscissa
                xs, first = np.unique(xp, return_index=True)
                block[:, j] = np.interp(block[:, j], xs, fp[first])
            else:  # one value in this cluster: send it to the reference median
                block[:, j] = np.median(C_rna[in_r, j])
        out[in_a] = block
    return C_rna.copy(), out

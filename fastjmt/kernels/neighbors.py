"""Mutual-nearest-neighbour averaging over low-dimensional cell factors (the paper's real-data post-processing)."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def mnn_average(C_query, C_ref, query_to_ref, query_to_ref_dist, ref_to_query, out, n_mutual):
    """Replace every query row by the weighted mean of its mutual nearest neighbours in the reference.

    Query cell ``p`` and reference cell ``q`` are mutual neighbours when ``q`` is
    among the ``k`` nearest references of ``p`` and ``p`` among the ``k`` nearest
    queries of ``q``. The weight of the pair is ``exp(-|C_query[p] - C_ref[q]|²)``.
    A query row without a mutual neighbour is copied unchanged.

    Parameters
    ----------
    C_query : ndarray (n_query, d)
    C_ref : ndarray (n_ref, d)
    query_to_ref : int ndarray (n_query, k)
        Indices of the ``k`` nearest reference rows of each query row (−1: no neighbour).
    query_to_ref_dist : ndarray (n_query, k)
        Their Euclidean distances.
    ref_to_query : int ndarray (n_ref, k2)
        Indices of the ``k2`` nearest query rows of each reference row.
    out : ndarray (n_query, d)
        Written: the averaged rows (must not alias ``C_query``).
    n_mutual : int64 ndarray (n_query,)
        Written: the number of mutual neighbours of each query row.

    Every query row is written by one thread only, so the result does not
    depend on the thread count.
    """
    n, d = C_query.shape
    k = query_to_ref.shape[1]
    k2 = ref_to_query.shape[1]
    for p in prange(n):
        wsum = 0.0
        m = 0
        for j in range(d):
            out[p, j] = 0.0
        for a in range(k):
            q = query_to_ref[p, a]
            if q < 0:  # an unfilled slot of an approximate neighbour list
                continue
            mutual = False
            for b in range(k2):
                if ref_to_query[q, b] == p:
                    mutual = True
                    break
            if not mutual:
                continue
            dist = query_to_ref_dist[p, a]
            w = np.exp(-dist * dist)
            wsum += w
            m += 1
            for j in range(d):
                out[p, j] += w * C_ref[q, j]
        n_mutual[p] = m
        if m == 0:
            for j in range(d):
                out[p, j] = C_query[p, j]
        else:
            for j in range(d):
                out[p, j] /= wsum


@njit(cache=True, nogil=True)
def rp_tree_leaves(X, leaf_size, seed, leaf_of):
    """Leaves of one random-projection tree over the rows of ``X`` (euclidean splits, as pynndescent).

    Each node is split by the hyperplane halfway between two of its points drawn
    at random (normal: their difference); a node of at most ``leaf_size`` points,
    or one whose points all fall on one side, becomes a leaf (a degenerate node is
    halved in index order instead). Writes the leaf number of every row into
    ``leaf_of`` and returns the number of leaves. Serial; trees are independent.
    """
    np.random.seed(seed)
    n, d = X.shape
    order = np.arange(n)
    proj = np.empty(n)
    # explicit stack of [start, stop) ranges of ``order``
    stack = np.empty((2 * (n // max(1, leaf_size) + 2) + 64, 2), dtype=np.int64)
    stack[0, 0], stack[0, 1] = 0, n
    top = 1
    n_leaves = 0
    while top > 0:
        top -= 1
        lo, hi = stack[top, 0], stack[top, 1]
        m = hi - lo
        if m <= leaf_size:
            for t in range(lo, hi):
                leaf_of[order[t]] = n_leaves
            n_leaves += 1
            continue
        a = order[lo + np.random.randint(m)]
        b = order[lo + np.random.randint(m)]
        offset = 0.0
        for j in range(d):
            offset += (X[a, j] - X[b, j]) * (X[a, j] + X[b, j]) * 0.5
        left = 0
        for t in range(lo, hi):
            i = order[t]
            s = -offset
            for j in range(d):
                s += (X[a, j] - X[b, j]) * X[i, j]
            proj[t] = s
            if s <= 0.0:
                left += 1
        if left == 0 or left == m:
            mid = lo + m // 2  # all on one side (e.g. duplicates): halve in index order
        else:
            # partition order[lo:hi] by the sign of proj, stable enough for our purpose
            i0 = lo
            for t in range(lo, hi):
                if proj[t] <= 0.0:
                    tmp = order[i0]
                    order[i0] = order[t]
                    order[t] = tmp
                    tp = proj[i0]
                    proj[i0] = proj[t]
                    proj[t] = tp
                    i0 += 1
            mid = i0
        if top + 2 > stack.shape[0]:
            grown = np.empty((2 * stack.shape[0], 2), dtype=np.int64)
            grown[:top] = stack[:top]
            stack = grown
        stack[top, 0], stack[top, 1] = lo, mid
        stack[top + 1, 0], stack[top + 1, 1] = mid, hi
        top += 2
    return n_leaves


@njit(cache=True, nogil=True)
def _push_candidate(dist_row, idx_row, d, j):
    """Insert ``(d, j)`` into one sorted top-k row if it is closer than the worst and not there yet."""
    k = dist_row.shape[0]
    if d >= dist_row[k - 1]:
        return
    for t in range(k):
        if idx_row[t] == j:
            return
    t = k - 1
    while t > 0 and dist_row[t - 1] > d:
        dist_row[t] = dist_row[t - 1]
        idx_row[t] = idx_row[t - 1]
        t -= 1
    dist_row[t] = d
    idx_row[t] = j


@njit(parallel=True, cache=True, nogil=True)
def bipartite_knn_update(A, B, leaf_start, members, a_dist, a_idx, b_dist, b_idx):
    """Refine the k-nearest lists between two point sets with the pairs that share a leaf.

    The rows of ``A`` are points ``0 … n_a−1`` and the rows of ``B`` points
    ``n_a …`` of one tree; ``members[leaf_start[l]:leaf_start[l+1]]`` lists the
    points of leaf ``l``. Every (A, B) pair in a leaf is measured once (squared
    euclidean) and offered to the A point's list of B neighbours (``a_dist``,
    ``a_idx``, sorted ascending) and to the B point's list of A neighbours. A point
    lies in exactly one leaf of a tree, so leaves run in parallel without sharing
    a list.
    """
    n_a = A.shape[0]
    d = A.shape[1]
    n_leaves = leaf_start.shape[0] - 1
    for l in prange(n_leaves):
        for s in range(leaf_start[l], leaf_start[l + 1]):
            p = members[s]
            if p >= n_a:
                continue
            for t in range(leaf_start[l], leaf_start[l + 1]):
                q = members[t]
                if q < n_a:
                    continue
                qb = q - n_a
                dist = 0.0
                for j in range(d):
                    diff = A[p, j] - B[qb, j]
                    dist += diff * diff
                _push_candidate(a_dist[p], a_idx[p], dist, qb)
                _push_candidate(b_dist[qb], b_idx[qb], dist, p)


@njit(parallel=True, cache=True, nogil=True)
def rp_forest_leaves(X, leaf_size, seeds, leaf_of):
    """``leaf_of[t]`` = the leaves of tree ``t`` (seeded by ``seeds[t]``), trees built in parallel.

    Returns the leaf counts."""
    n_trees = seeds.shape[0]
    n_leaves = np.empty(n_trees, dtype=np.int64)
    for t in prange(n_trees):
        n_leaves[t] = rp_tree_leaves(X, leaf_size, seeds[t], leaf_of[t])
    return n_leaves

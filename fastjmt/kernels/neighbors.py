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
        Indices of the ``k`` nearest reference rows of each query row.
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

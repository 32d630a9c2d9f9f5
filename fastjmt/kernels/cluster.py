"""k-means kernels over a low-dimensional embedding (used by the spectral initialisation)."""

import numpy as np
from numba import njit, prange

from .dense import REDUCE_CHUNK, _n_chunks, sum_partials_1d, sum_partials_2d


@njit(parallel=True, cache=True, nogil=True)
def kmeans_assign(X, centers, labels, sq_dist):
    """Nearest center of every row of ``X``; writes ``labels`` and the squared distance."""
    n, d = X.shape
    k = centers.shape[0]
    for i in prange(n):
        best = np.inf
        arg = 0
        for c in range(k):
            s = 0.0
            for j in range(d):
                t = X[i, j] - centers[c, j]
                s += t * t
            if s < best:
                best = s
                arg = c
        labels[i] = arg
        sq_dist[i] = best


@njit(cache=True, nogil=True)
def _cluster_sums_chunk(X, labels, start, stop, part, cnt):
    part[:, :] = 0.0
    cnt[:] = 0.0
    for i in range(start, stop):
        l = labels[i]
        cnt[l] += 1.0
        for j in range(X.shape[1]):
            part[l, j] += X[i, j]


@njit(parallel=True, cache=True, nogil=True)
def cluster_sums(X, labels, k):
    """Per-cluster sums of the rows of ``X`` and the counts (float64), in fixed chunk order."""
    n, d = X.shape
    nc = _n_chunks(n)
    part = np.empty((nc, k, d))
    cnt = np.empty((nc, k))
    for c in prange(nc):
        _cluster_sums_chunk(X, labels, c * REDUCE_CHUNK, min(n, (c + 1) * REDUCE_CHUNK), part[c], cnt[c])
    return sum_partials_2d(part), sum_partials_1d(cnt)

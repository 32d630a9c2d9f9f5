"""k-means kernels over a low-dimensional embedding (used by the spectral initialisation)."""

import numpy as np
from numba import njit, prange

from .dense import REDUCE_CHUNK, _n_chunks


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


@njit(parallel=True, cache=True, nogil=True)
def cluster_sums(X, labels, k):
    """Per-cluster sums of the rows of ``X`` and the counts (float64), in fixed chunk order."""
    n, d = X.shape
    nc = _n_chunks(n)
    part = np.zeros((nc, k, d))
    cnt = np.zeros((nc, k))
    for c in prange(nc):
        stop = min(n, (c + 1) * REDUCE_CHUNK)
        for i in range(c * REDUCE_CHUNK, stop):
            l = labels[i]
            cnt[c, l] += 1.0
            for j in range(d):
                part[c, l, j] += X[i, j]
    sums = np.zeros((k, d))
    counts = np.zeros(k)
    for c in range(nc):
        sums += part[c]
        counts += cnt[c]
    return sums, counts

"""k-means kernel over a low-dimensional embedding (used by the spectral initialisation)."""

import numpy as np
from numba import njit, prange


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

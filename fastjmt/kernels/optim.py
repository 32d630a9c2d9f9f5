"""In-place parameter updates: Adam and plain gradient descent on selected rows."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def adam_rows(P, G, M, V, rows, lr, beta1, beta2, eps, step):
    """One Adam step on the rows ``rows`` of ``P`` with gradient ``G`` (one row per entry of ``rows``).

    ``M`` and ``V`` are the first and second moment estimates, shaped like ``P``;
    ``step`` is the (1-based) number of updates these rows' moments have seen.
    """
    K = P.shape[1]
    c1 = 1.0 / (1.0 - beta1 ** step)
    c2 = 1.0 / (1.0 - beta2 ** step)
    for t in prange(rows.shape[0]):
        r = rows[t]
        for k in range(K):
            g = G[t, k]
            m = beta1 * M[r, k] + (1.0 - beta1) * g
            v = beta2 * V[r, k] + (1.0 - beta2) * g * g
            M[r, k] = m
            V[r, k] = v
            P[r, k] -= lr * (m * c1) / (np.sqrt(v * c2) + eps)


@njit(parallel=True, cache=True, nogil=True)
def sgd_rows(P, G, rows, lr):
    """Plain gradient step ``P[rows[t]] -= lr · G[t]``."""
    K = P.shape[1]
    for t in prange(rows.shape[0]):
        r = rows[t]
        for k in range(K):
            P[r, k] -= lr * G[t, k]

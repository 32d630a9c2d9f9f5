"""Kernels over tall dense factors (rows = cells or features, K columns).

Reductions over rows (Gram matrices, inner products, column sums) are done in
fixed-size row chunks: each chunk writes its own partial result and the
partials are summed in chunk order afterwards. The chunk size does not depend
on the number of threads, so these results are bit-identical for any thread
count. Partial sums are kept in float64 for float32 inputs too.

Layout of a reduction (public parallel kernel → serial worker): the parallel
kernel allocates the partials with ``np.empty``, its ``prange`` body calls a
serial worker on one chunk (which zeroes its own partial first), and a serial
helper adds the partials up. Inside a ``parallel=True`` function every
``np.zeros`` and array expression becomes a parallel loop of its own, which
Numba compiles separately; keeping them out roughly halves the cold compile
time of these kernels and changes no result bit.
"""

import numpy as np
from numba import njit, prange

#: rows per reduction chunk; fixed so that results do not depend on threads.
REDUCE_CHUNK = 2048


@njit(cache=True, nogil=True)
def _n_chunks(n):
    return max(1, (n + REDUCE_CHUNK - 1) // REDUCE_CHUNK)


@njit(cache=True, nogil=True)
def sum_partials_2d(partial):
    """``Σ_c partial[c]`` (shape (a, b)) in chunk order, starting from 0."""
    nc, K1, K2 = partial.shape
    out = np.empty((K1, K2))
    for a in range(K1):
        for b in range(K2):
            s = 0.0
            for c in range(nc):
                s += partial[c, a, b]
            out[a, b] = s
    return out


@njit(cache=True, nogil=True)
def _cross_gram_chunk(A, B, start, stop, acc):
    acc[:, :] = 0.0
    for i in range(start, stop):
        for a in range(A.shape[1]):
            x = np.float64(A[i, a])
            for b in range(B.shape[1]):
                acc[a, b] += x * B[i, b]


@njit(parallel=True, cache=True, nogil=True)
def cross_gram(A, B):
    """``Aᵀ B`` (float64, shape (K1, K2)) for tall ``A`` (n × K1) and ``B`` (n × K2)."""
    n, K1 = A.shape
    nc = _n_chunks(n)
    partial = np.empty((nc, K1, B.shape[1]))
    for c in prange(nc):
        _cross_gram_chunk(A, B, c * REDUCE_CHUNK, min(n, (c + 1) * REDUCE_CHUNK), partial[c])
    return sum_partials_2d(partial)


@njit(parallel=True, cache=True, nogil=True)
def add_masked_columns(G, C, cols, coef):
    """``G[:, cols] += coef · C[:, cols]`` in place (gradient of the mask term)."""
    n = G.shape[0]
    for i in prange(n):
        for t in range(cols.shape[0]):
            k = cols[t]
            G[i, k] += coef * C[i, k]


@njit(parallel=True, cache=True, nogil=True)
def axpby(a, X, b, Y, out):
    """``out = a X + b Y`` elementwise for two arrays of one shape (n × K)."""
    n, K = X.shape
    for i in prange(n):
        for k in range(K):
            out[i, k] = a * X[i, k] + b * Y[i, k]


@njit(parallel=True, cache=True, nogil=True)
def add_entropy_grad(G, C, coef):
    """``G += coef · dH/dC = −coef · (log C + 1)`` in place (C clipped at 1e-30 inside the log)."""
    n, K = C.shape
    for i in prange(n):
        for k in range(K):
            G[i, k] -= coef * (np.log(max(np.float64(C[i, k]), 1e-30)) + 1.0)

"""Kernels over tall dense factors (rows = cells or features, K columns).

The Gram products ``AᵀB`` (:func:`cross_gram`) are one float64 BLAS product:
inside a fit BLAS runs one thread, so they do not depend on the thread count.
Until 2026-11-29 they were a parallel Numba kernel reducing fixed-size row
chunks in chunk order; that kernel cost a first fit about 1–2 s of compile.

Inside a ``parallel=True`` function every ``np.zeros`` and array expression
becomes a parallel loop of its own, which Numba compiles separately: the
kernels here keep them out.
"""

import numpy as np
from numba import njit, prange


def cross_gram(A, B):
    """``Aᵀ B`` (float64, shape (K1, K2)) for tall ``A`` (n × K1) and ``B`` (n × K2).

    Plain NumPy: both factors in float64, one BLAS product (one BLAS thread
    inside a fit, see ``_threads.fit_threads``, so the result does not depend
    on the thread count). It is n·K1·K2 flops on O(n·K) data, small next to a
    sparse product, and as a parallel Numba kernel it cost a first fit about
    1–2 s of compile.
    """
    A = np.asarray(A)
    B = np.asarray(B)
    return np.dot(A.T.astype(np.float64), B.astype(np.float64))


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

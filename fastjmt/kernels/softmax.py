"""Row-wise softmax and its backward pass (the simplex parametrisation C = softmax(Z))."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def softmax_rows(Z, rows, out):
    """``out[t] = softmax(Z[rows[t]])``, stable (the row maximum is subtracted first)."""
    K = Z.shape[1]
    for t in prange(rows.shape[0]):
        r = rows[t]
        m = Z[r, 0]
        for k in range(1, K):
            if Z[r, k] > m:
                m = Z[r, k]
        s = 0.0
        for k in range(K):
            e = np.exp(Z[r, k] - m)
            out[t, k] = e
            s += e
        inv = 1.0 / s
        for k in range(K):
            out[t, k] *= inv


@njit(parallel=True, cache=True, nogil=True)
def softmax_backward(C, G, out):
    """Gradient with respect to the logits: ``out = C ⊙ (G − ⟨G_i, C_i⟩ 1)`` per row.

    ``G`` is the gradient with respect to ``C = softmax(Z)``; ``out`` may be ``G``.
    """
    n, K = C.shape
    for i in prange(n):
        s = 0.0
        for k in range(K):
            s += G[i, k] * C[i, k]
        for k in range(K):
            out[i, k] = C[i, k] * (G[i, k] - s)

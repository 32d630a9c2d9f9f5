"""Backward pass of the row-wise softmax (the simplex parametrisation C = softmax(Z)); the fit's steps fuse it into ``optim.logit_step_rows``."""

from numba import njit, prange


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

"""Products of tall dense factors (rows = cells or features, K columns).

The Gram products ``AᵀB`` (:func:`cross_gram`) are one float64 BLAS product:
inside a fit BLAS runs one thread, so they do not depend on the thread count.
Until 2026-11-29 they were a parallel Numba kernel reducing fixed-size row
chunks in chunk order; that kernel cost a first fit about 1–2 s of compile.
The per-row terms of the gradients (mask, entropy, softmax backward pass) are
fused into :func:`fastjmt.kernels.optim.logit_step_rows`.
"""

import numpy as np


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

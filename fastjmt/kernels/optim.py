"""In-place parameter updates: the fused gradient step (Adam or plain descent) on selected logit rows.

The package's one optimiser: every block of a fit (cell and feature logits, the association
matrices) is stepped by :func:`logit_step_rows`."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def logit_step_rows(G, M, use_M, extra, extra_coef, C, mask_cols, mask_coef, ent_coef, Z, Mom, Var, rows, lr,
                    beta1, beta2, eps, step, mode, simplex, out):
    """One fused gradient step on the logits of the selected rows of a membership factor ``C = softmax(Z)``.

    Row ``t`` (logit row ``r = rows[t]``, ``C[t]`` its current memberships):

    1. gradient with respect to C: ``g = G[t] Mᵀ`` (``use_M``; else ``g = G[t]``)
       ``+ extra_coef · extra[t]`` (a coupling gradient)
       ``+ mask_coef · C[t, mask_cols]`` on the masked columns (mask term)
       ``− ent_coef · (log C[t] + 1)`` (entropy term, C clipped at 1e-30 in the log);
    2. through the softmax: ``g ← C[t] ⊙ (g − ⟨g, C[t]⟩)`` (``simplex``; otherwise
       ``Z`` is a plain parameter block, such as the association matrix S, and
       ``g`` is its gradient as it is);
    3. ``mode`` 1: Adam (moments ``Mom``, ``Var``, 1-based ``step``), 0: plain
       gradient descent on ``Z[r]``; 2: no step, ``out[t] = g`` (the gradient
       with respect to the logits; ``Z``, ``Mom``, ``Var`` are not touched);
    4. ``out[t] = softmax(Z[r])``, the new memberships (modes 0 and 1; ``Z[r]``
       itself without ``simplex``).

    Gradient, softmax backward pass, optimiser and softmax in one parallel loop:
    one pass over the rows, one kernel to compile. ``out`` serves as the row's
    scratch buffer, so nothing is allocated. The plain NumPy twin is
    ``tests/naive.py``.
    """
    K = Z.shape[1]
    c1 = 1.0 / (1.0 - beta1 ** step)
    c2 = 1.0 / (1.0 - beta2 ** step)
    for t in prange(rows.shape[0]):
        r = rows[t]
        if use_M:
            for k in range(K):
                s = 0.0
                for a in range(G.shape[1]):
                    s += G[t, a] * M[k, a]
                out[t, k] = s
        else:
            for k in range(K):
                out[t, k] = G[t, k]
        if extra_coef != 0.0:
            for k in range(K):
                out[t, k] += extra_coef * extra[t, k]
        for j in range(mask_cols.shape[0]):
            k = mask_cols[j]
            out[t, k] += mask_coef * C[t, k]
        if ent_coef != 0.0:
            for k in range(K):
                out[t, k] -= ent_coef * (np.log(max(np.float64(C[t, k]), 1e-30)) + 1.0)
        s = 0.0
        if simplex:
            for k in range(K):
                s += out[t, k] * C[t, k]
        if mode == 2:
            for k in range(K):
                out[t, k] = C[t, k] * (out[t, k] - s) if simplex else out[t, k]
        else:
            for k in range(K):
                g = C[t, k] * (out[t, k] - s) if simplex else out[t, k]
                if mode == 1:
                    m = beta1 * Mom[r, k] + (1.0 - beta1) * g
                    v = beta2 * Var[r, k] + (1.0 - beta2) * g * g
                    Mom[r, k] = m
                    Var[r, k] = v
                    Z[r, k] -= lr * (m * c1) / (np.sqrt(v * c2) + eps)
                else:
                    Z[r, k] -= lr * g
            if simplex:
                mx = Z[r, 0]
                for k in range(1, K):
                    if Z[r, k] > mx:
                        mx = Z[r, k]
                s = 0.0
                for k in range(K):
                    e = np.exp(Z[r, k] - mx)
                    out[t, k] = e
                    s += e
                inv = 1.0 / s
                for k in range(K):
                    out[t, k] *= inv
            else:
                for k in range(K):
                    out[t, k] = Z[r, k]

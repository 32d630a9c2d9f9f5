"""Plain NumPy twins of the fit's Numba kernels (STUMPY's habit): slow, obvious, float64, dense.

Each twin takes the kernel's arguments (raw CSR arrays, not scipy objects) and
returns what the kernel writes into its output arrays; ``tests/test_kernels.py``
compares every kernel with its twin. The objective's dense reference (loss and
gradients of every block) is ``tests/reference.py``.
"""

import numpy as np


def dense(indptr, indices, data, n_cols):
    """The dense matrix of CSR arrays (float64)."""
    out = np.zeros((indptr.size - 1, n_cols))
    for i in range(indptr.size - 1):
        for t in range(indptr[i], indptr[i + 1]):
            out[i, indices[t]] += data[t]
    return out


def _keep(col_mask, n_cols):
    return col_mask.astype(bool) if col_mask.size else np.ones(n_cols, bool)


def spmm_rows(indptr, indices, data, rows, col_mask, B):
    """``X[rows][:, mask] @ B[mask]`` (an empty mask keeps every column)."""
    keep = _keep(col_mask, B.shape[0])
    return dense(indptr, indices, data, B.shape[0])[rows][:, keep] @ B[keep].astype(np.float64)


def spmm_t_rows(indptr, indices, data, rows, col_mask, U, n_cols):
    """``(X[rows]ᵀ U)`` with the rows of columns outside the mask zero (an empty mask keeps every column)."""
    keep = _keep(col_mask, n_cols)
    return (dense(indptr, indices, data, n_cols)[rows].T @ U.astype(np.float64)) * keep[:, None]


def masked_row_sums(indptr, indices, data, rows, col_mask, n_cols):
    """Row sums and row sums of squares of ``X[rows][:, mask]``."""
    D = dense(indptr, indices, data, n_cols)[rows][:, _keep(col_mask, n_cols)]
    return D.sum(1), (D**2).sum(1)


def cross_gram(A, B):
    """``Aᵀ B`` in float64."""
    return A.astype(np.float64).T @ B.astype(np.float64)


def logit_step_rows(G, M, extra, extra_coef, C, cols, mask_coef, ent_coef, Z, Mom, Var, rows, lr, b1, b2, eps,
                    step, mode, simplex=True):
    """``kernels.logit_step_rows``, term by term as the objective defines them (float64).

    ``M`` None: ``G`` is the gradient with respect to C itself. ``mode`` 0: plain descent, 1: Adam, 2: the
    gradient with respect to the logits. Returns ``(out, Z, Mom, Var)`` (``out``: the new memberships, the new
    rows of a plain block without ``simplex``, or the gradient in mode 2).
    """
    G, C = G.astype(np.float64), C.astype(np.float64)
    g = G @ M.T.astype(np.float64) if M is not None else G.copy()
    g += extra_coef * extra
    g[:, cols] += mask_coef * C[:, cols]
    g -= ent_coef * (np.log(np.maximum(C, 1e-30)) + 1.0)
    if simplex:
        g = C * (g - (g * C).sum(1, keepdims=True))  # through the softmax
    Z, Mom, Var = Z.astype(np.float64), Mom.astype(np.float64), Var.astype(np.float64)
    if mode == 2:
        return g, Z, Mom, Var
    if mode == 1:
        Mom[rows] = b1 * Mom[rows] + (1 - b1) * g
        Var[rows] = b2 * Var[rows] + (1 - b2) * g * g
        Z[rows] -= lr * (Mom[rows] / (1 - b1**step)) / (np.sqrt(Var[rows] / (1 - b2**step)) + eps)
    else:
        Z[rows] -= lr * g
    if not simplex:
        return Z[rows].copy(), Z, Mom, Var
    E = np.exp(Z[rows] - Z[rows].max(1, keepdims=True))
    return E / E.sum(1, keepdims=True), Z, Mom, Var

"""The sparse-product layer: every product of the data (or the gene activity) with a dense factor.

The rest of the package reaches the kernels' sparse and Gram products only
through these functions. Inputs are raw CSR arrays ``(indptr, indices, data)``
(column indices sorted within rows) and dense C-contiguous factors; outputs
are new dense arrays in the factor's dtype. No function here allocates an
array with one axis over cells and the other over features.
"""

from __future__ import annotations

import numba
import numpy as np

from . import kernels as kn


def work_chunks() -> int:
    """How many nonzero-balanced chunks a sparse kernel splits its rows into: four per thread."""
    return 4 * numba.get_num_threads()


#: bytes of dense rows one column block of a sparse product may touch: an eighth of the 2 MiB L2 cache
#: of the development machine's cores, which leaves room for the rows being written and the streamed data.
BLOCK_BYTES = 256 * 1024


def column_block(indptr: np.ndarray, p: int, K: int, itemsize: int) -> int:
    """Columns per cache block of the sparse products (``block_cols`` of :func:`kernels.spmm_rows`).

    A block's rows of the dense factor (K values each) take at most
    :data:`BLOCK_BYTES`, so the rows that the sweep over a block reads or
    scatters into stay in the core's cache instead of coming from L3 or memory
    at random. Every row is swept once per block, so the blocks are never more
    than one per 8 nonzeros of an average row (very sparse rows would pay more
    for the sweeps than they save).
    """
    cols = max(1, BLOCK_BYTES // max(1, K * itemsize))
    n_rows = indptr.shape[0] - 1
    nnz_per_row = (int(indptr[-1]) - int(indptr[0])) / max(n_rows, 1)
    max_blocks = max(1, int(nnz_per_row // 8))
    return max(cols, -(-p // max_blocks), 1)


#: the sparse products' ``col_mask`` for "every column": no mask load or branch per nonzero.
_EVERY_COLUMN = np.zeros(0, dtype=np.uint8)


def kernel_mask(col_mask: np.ndarray) -> np.ndarray:
    """``col_mask`` as the sparse products take it: empty when it keeps every column (a full batch)."""
    return _EVERY_COLUMN if col_mask.all() else col_mask


def spmm(csr: tuple, rows: np.ndarray, col_mask: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``X[rows][:, col_mask] @ B[col_mask]`` from CSR arrays, shape (len(rows), K), in ``B``'s dtype."""
    out = np.empty((rows.shape[0], B.shape[1]), dtype=B.dtype)
    block = column_block(csr[0], B.shape[0], B.shape[1], B.dtype.itemsize)
    kn.spmm_rows(csr[0], csr[1], csr[2], rows, kernel_mask(col_mask), B, out, work_chunks(), block)
    return out


def spmm_all(csr: tuple, n_cols: int, B: np.ndarray) -> np.ndarray:
    """``X @ B`` over all rows and columns of the CSR arrays ``csr`` (``n_cols`` columns)."""
    n = csr[0].shape[0] - 1
    return spmm(csr, np.arange(n, dtype=np.int64), np.ones(n_cols, np.uint8), B)


def spmm_t(X: tuple, Xt, rows: np.ndarray, row_mask: np.ndarray, cols: np.ndarray, col_mask: np.ndarray,
           U: np.ndarray) -> np.ndarray:
    """``X[rows][:, cols]ᵀ @ U`` (``U`` has one row per entry of ``rows``), shape (len(cols), K).

    With the CSR of ``Xᵀ`` (``Xt``) this is a row-parallel gather (fast); with
    ``Xt=None`` (``low_memory``) it scatters from the CSR of ``X`` into one
    features × K buffer per thread, and no transposed copy of the data exists.
    """
    n = X[0].shape[0] - 1
    if Xt is not None:
        if rows.shape[0] == n:
            U_full = U
        else:
            U_full = np.zeros((n, U.shape[1]), dtype=U.dtype)
            U_full[rows] = U
        return spmm(Xt, cols, row_mask, U_full)
    p = col_mask.shape[0]
    out = np.empty((p, U.shape[1]), dtype=U.dtype)
    block = column_block(X[0], p, U.shape[1], U.dtype.itemsize)
    kn.spmm_t_rows(X[0], X[1], X[2], rows, kernel_mask(col_mask), np.ascontiguousarray(U), out,
                   numba.get_num_threads(), block)
    return out if cols.shape[0] == p else np.ascontiguousarray(out[cols])


def spmm_t_full(X: tuple, Xt, p: int, U: np.ndarray) -> np.ndarray:
    """``Xᵀ U`` over all rows and columns (see :func:`spmm_t`)."""
    n = X[0].shape[0] - 1
    return spmm_t(X, Xt, np.arange(n, dtype=np.int64), np.ones(n, np.uint8), np.arange(p, dtype=np.int64),
                  np.ones(p, np.uint8), U)


def masked_row_sums(X: tuple, rows: np.ndarray, col_mask: np.ndarray):
    """Row sums and row sums of squares (float64) of ``X[rows][:, col_mask]``."""
    s, q = np.empty(rows.size), np.empty(rows.size)
    kn.masked_row_sums(*X, rows, col_mask, s, q, work_chunks())
    return s, q


def gram(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``Aᵀ B`` (float64, K1 × K2) for two tall factors with the same rows (one BLAS product)."""
    return kn.cross_gram(A, B)


def matmul(A: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``A @ M`` for tall ``A`` and small ``M``, in ``A``'s dtype."""
    # a tall-skinny times K × K product is BLAS's job (one BLAS thread inside a fit, see
    # _threads.fit_threads); a Numba kernel for it would only add compile time
    return np.dot(A, np.ascontiguousarray(M, dtype=A.dtype))


def frob(A: np.ndarray, B: np.ndarray) -> float:
    """``⟨A, B⟩ = tr(AᵀB)`` in float64, through :func:`gram`.

    K times the flops of a plain dot product, but the fit already compiles
    ``cross_gram`` (Gram matrices) and this keeps a first fit from compiling one
    more parallel kernel; the K × K product is cheap next to a sparse product.
    """
    return float(np.trace(gram(A, B)))

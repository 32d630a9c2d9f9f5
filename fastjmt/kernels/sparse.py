"""Kernels over compressed sparse rows: products with dense factors and row sums.

Every kernel takes the raw ``indptr, indices, data`` arrays of a CSR matrix
(or of a CSC matrix read as the CSR of its transpose), never a scipy object.
``indptr`` and ``indices`` may be int32 or int64; offsets are computed in
64 bits. A mini-batch is described by ``rows`` (the rows to visit, in output
order) and ``col_mask`` (a uint8 flag per column: 1 keeps the column); the
products take an empty ``col_mask`` to mean every column, which skips a load
and a branch per nonzero (a quarter of a full-batch product's time).

Positions and column indices inside the nonzero loops are unsigned (uint64):
Numba then indexes without the negative-index wraparound it adds for signed
integers, three instructions less per array access (the products ran 15–25 %
faster; see docs/performance.md). Valid CSR arrays hold no negative values.

Rows are split into chunks of roughly equal nonzero count, so that skewed
rows do not leave a thread idle. No output element is written by two chunks,
so results do not depend on the number of threads.

The products are cache-blocked over columns: a chunk sweeps its rows once per
block of columns (a cursor per row remembers where the last sweep stopped,
which needs column indices sorted within each row, as scipy's canonical CSR
has), so the dense rows it reads or writes (``B[j]`` or a buffer's row ``j``)
come from a block small enough to stay in cache. With 100,000 columns and
K = 20 this made both products 2–3× faster on the development machine (see
docs/performance.md); with one block the loops are the plain ones.
"""

import numpy as np
from numba import njit, prange

#: nonzeros (plus one per row) a chunk should hold at least before splitting more.
_MIN_CHUNK_WORK = 4096


@njit(cache=True, nogil=True)
def nnz_balanced_bounds(indptr, rows, n_chunks):
    """Split ``rows`` into at most ``n_chunks`` contiguous runs of equal work.

    Work of a row is its nonzero count plus one. Returns ``bounds`` (int64) with
    ``bounds[0] = 0`` and ``bounds[-1] = len(rows)``; chunk ``c`` is
    ``rows[bounds[c]:bounds[c + 1]]``.
    """
    n = rows.shape[0]
    total = np.int64(0)
    for t in range(n):
        r = rows[t]
        total += np.int64(indptr[r + 1]) - np.int64(indptr[r]) + 1
    n_chunks = max(1, min(n_chunks, (total + _MIN_CHUNK_WORK - 1) // _MIN_CHUNK_WORK))
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    bounds[0] = 0
    c = 1
    acc = np.int64(0)
    for t in range(n):
        r = rows[t]
        acc += np.int64(indptr[r + 1]) - np.int64(indptr[r]) + 1
        while c < n_chunks and acc * n_chunks >= c * total:
            bounds[c] = t + 1
            c += 1
    while c <= n_chunks:
        bounds[c] = n
        c += 1
    return bounds


@njit(parallel=True, cache=True, nogil=True)
def spmm_rows(indptr, indices, data, rows, col_mask, B, out, n_chunks, block_cols):
    """``out[t] = sum_j X[rows[t], j] * B[j]`` over columns ``j`` with ``col_mask[j]``.

    Parameters
    ----------
    indptr, indices, data : ndarray
        CSR arrays of ``X`` (n × p), column indices sorted within each row.
    rows : ndarray of int64, shape (m,)
        Rows of ``X`` to multiply, in output order.
    col_mask : ndarray of uint8, shape (p,) or (0,)
        Columns that take part (1) or are skipped (0); empty: every column.
    B : ndarray, shape (p, K)
        Dense right factor, C-contiguous.
    out : ndarray, shape (m, K)
        Written in place.
    n_chunks : int
        Most work chunks (a few per thread); the result does not depend on it.
    block_cols : int
        Columns per cache block (see :func:`fastjmt.objective.column_block`): each
        chunk sweeps its rows once per block of ``block_cols`` columns, so the rows
        of ``B`` it reads stay in cache. Every ``out[t, k]`` still sums its row's
        nonzeros in column order, so the result does not depend on it either.
    """
    p, K = B.shape
    masked = col_mask.shape[0] > 0
    bounds = nnz_balanced_bounds(indptr, rows, n_chunks)
    cursor = np.empty(rows.shape[0], dtype=np.uint64)
    one = np.uint64(1)
    # the loop is written out here, not in a worker function: one compiled function less at the first fit
    for ch in prange(bounds.shape[0] - 1):
        t0, t1 = bounds[ch], bounds[ch + 1]
        for t in range(t0, t1):
            cursor[t] = np.uint64(indptr[rows[t]])
            for k in range(K):
                out[t, k] = 0.0
        for hi in range(block_cols, p + block_cols, block_cols):
            for t in range(t0, t1):
                end = np.uint64(indptr[rows[t] + 1])
                jj = cursor[t]
                if masked:
                    while jj < end and indices[jj] < hi:
                        j = np.uint64(indices[jj])
                        if col_mask[j]:
                            x = data[jj]
                            for k in range(K):
                                out[t, k] += x * B[j, k]
                        jj += one
                else:
                    while jj < end and indices[jj] < hi:
                        j = np.uint64(indices[jj])
                        x = data[jj]
                        for k in range(K):
                            out[t, k] += x * B[j, k]
                        jj += one
                cursor[t] = jj


@njit(parallel=True, cache=True, nogil=True)
def masked_row_sums(indptr, indices, data, rows, col_mask, sums, sq_sums, n_chunks):
    """Row sums and row sums of squares of ``X[rows][:, col_mask]`` (float64 out).

    ``n_chunks`` as in :func:`spmm_rows`."""
    bounds = nnz_balanced_bounds(indptr, rows, n_chunks)
    for ch in prange(bounds.shape[0] - 1):
        for t in range(bounds[ch], bounds[ch + 1]):
            r = rows[t]
            s = 0.0
            s2 = 0.0
            for jj in range(np.int64(indptr[r]), np.int64(indptr[r + 1])):
                if col_mask[indices[jj]]:
                    x = np.float64(data[jj])
                    s += x
                    s2 += x * x
            sums[t] = s
            sq_sums[t] = s2


@njit(parallel=True, cache=True, nogil=True)
def spmm_t_rows(indptr, indices, data, rows, col_mask, U, out, n_chunks, block_cols):
    """``out = X[rows]ᵀ U`` restricted to columns with ``col_mask`` (others are 0), without a transposed copy.

    Parameters
    ----------
    indptr, indices, data : ndarray
        CSR arrays of ``X`` (n × p), column indices sorted within each row.
    rows : ndarray of int64, shape (m,)
        Rows of ``X`` taking part; ``U[t]`` belongs to row ``rows[t]``.
    col_mask : ndarray of uint8, shape (p,) or (0,)
        Columns that take part; empty: every column.
    U : ndarray, shape (m, K)
        Dense left factor, one row per entry of ``rows``.
    out : ndarray, shape (p, K)
        Written in place.
    n_chunks : int
        Row chunks (of equal nonzero count), each scattering into its own p × K
        buffer; the buffers are summed in chunk order, so the result depends on
        ``n_chunks`` only in rounding and is reproducible for a fixed value.
    block_cols : int
        Columns per cache block: each chunk sweeps its rows once per block, so the
        rows of its buffer it writes stay in cache. Each ``out[j]`` still sums its
        rows in order, so the result does not depend on it.
    """
    p, K = out.shape
    bounds = nnz_balanced_bounds(indptr, rows, n_chunks)
    nc = bounds.shape[0] - 1
    buf = np.empty((nc, p, K), dtype=out.dtype)
    cursor = np.empty(rows.shape[0], dtype=np.uint64)
    for ch in prange(nc):
        _scatter_rows(indptr, indices, data, rows, col_mask, U, bounds[ch], bounds[ch + 1], block_cols, cursor,
                      buf[ch])
    for j in prange(p):
        for k in range(K):
            s = buf[0, j, k]
            for ch in range(1, nc):
                s += buf[ch, j, k]
            out[j, k] = s


@njit(cache=True, nogil=True)
def _scatter_rows(indptr, indices, data, rows, col_mask, U, t0, t1, block_cols, cursor, acc):
    """``acc = Σ_{t0 ≤ t < t1} X[rows[t]]ᵀ U[t]`` over the kept columns, one column block at a time.

    The worker of :func:`spmm_t_rows`.
    """
    acc[:, :] = 0.0
    p, K = acc.shape
    masked = col_mask.shape[0] > 0
    one = np.uint64(1)
    for t in range(t0, t1):
        cursor[t] = np.uint64(indptr[rows[t]])
    for hi in range(block_cols, p + block_cols, block_cols):
        for t in range(t0, t1):
            end = np.uint64(indptr[rows[t] + 1])
            jj = cursor[t]
            if masked:
                while jj < end and indices[jj] < hi:
                    j = np.uint64(indices[jj])
                    if col_mask[j]:
                        x = data[jj]
                        for k in range(K):
                            acc[j, k] += x * U[t, k]
                    jj += one
            else:
                while jj < end and indices[jj] < hi:
                    j = np.uint64(indices[jj])
                    x = data[jj]
                    for k in range(K):
                        acc[j, k] += x * U[t, k]
                    jj += one
            cursor[t] = jj

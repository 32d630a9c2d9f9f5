"""asv: the CSR kernels against scipy's product, and the sparse bilinear term of the loss.

Each product is timed on the ATAC matrix of the current profile (see
``common.py``) for K = 8 and 32, float32 and float64, on one thread and on all
of them; ``time_scipy_*`` is the reference (scipy's product is single-threaded).
"""

import numba
import numpy as np

from fastjmt import kernels as kn
from fastjmt.products import column_block, frob, kernel_mask, work_chunks

from .common import THREADS, data, dense_right_factor


class SparseProducts:
    """``X V`` (row gather), ``Xᵀ U`` from the transposed CSR, ``Xᵀ U`` by scattering (``low_memory``)."""

    params = ([8, 32], ["float32", "float64"], THREADS)
    param_names = ["K", "dtype", "threads"]

    def setup(self, K, dtype, threads):
        X = data().atac.astype(dtype).tocsr()
        self.X, self.Xt = X, X.T.tocsr()
        n, p = X.shape
        self.V, self.U = dense_right_factor(p, K, dtype), dense_right_factor(n, K, dtype, seed=1)
        self.rows, self.cols = np.arange(n, dtype=np.int64), np.arange(p, dtype=np.int64)
        # every row / column, as in a full batch (an empty mask: no mask check per nonzero)
        self.row_mask, self.col_mask = kernel_mask(np.ones(n, np.uint8)), kernel_mask(np.ones(p, np.uint8))
        self.out_n, self.out_p = np.empty((n, K), dtype), np.empty((p, K), dtype)
        item = np.dtype(dtype).itemsize  # column blocks as inside a fit
        self.block_p, self.block_n = column_block(X.indptr, p, K, item), column_block(self.Xt.indptr, n, K, item)
        self._threads = numba.get_num_threads()
        numba.set_num_threads(threads)
        self.time_XV()
        self.time_XtU_transposed()
        self.time_XtU_scatter()

    def teardown(self, *_):
        numba.set_num_threads(self._threads)

    def time_XV(self, *_):
        X = self.X
        kn.spmm_rows(X.indptr, X.indices, X.data, self.rows, self.col_mask, self.V, self.out_n, work_chunks(),
                     self.block_p)

    def time_XtU_transposed(self, *_):
        Xt = self.Xt
        kn.spmm_rows(Xt.indptr, Xt.indices, Xt.data, self.cols, self.row_mask, self.U, self.out_p, work_chunks(),
                     self.block_n)

    def time_XtU_scatter(self, *_):
        X = self.X
        kn.spmm_t_rows(X.indptr, X.indices, X.data, self.rows, self.col_mask, self.U, self.out_p,
                       numba.get_num_threads(), self.block_p)

    def time_scipy_XV(self, *_):
        self.X @ self.V

    def time_scipy_XtU(self, *_):
        self.X.T @ self.U


class BilinearTerm:
    """``Σ_nnz X_ij ⟨U_i, V_j⟩``: the only data-touching part of a reconstruction term (one product + one dot)."""

    params = ([8, 32], ["float32", "float64"])
    param_names = ["K", "dtype"]

    def setup(self, K, dtype):
        X = data().atac.astype(dtype).tocsr()
        n, p = X.shape
        self.X = X
        self.U, self.V = dense_right_factor(n, K, dtype, seed=1), dense_right_factor(p, K, dtype)
        self.rows, self.col_mask = np.arange(n, dtype=np.int64), kernel_mask(np.ones(p, np.uint8))
        self.out = np.empty((n, K), dtype)
        self.block = column_block(X.indptr, p, K, np.dtype(dtype).itemsize)
        self.time_bilinear()

    def time_bilinear(self, *_):
        X = self.X
        kn.spmm_rows(X.indptr, X.indices, X.data, self.rows, self.col_mask, self.V, self.out, work_chunks(),
                     self.block)
        return frob(self.U, self.out)

    def time_scipy_bilinear(self, *_):
        return float(np.sum(self.U * (self.X @ self.V)))

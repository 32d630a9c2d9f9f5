"""Numba kernels: raw arrays and scalars in, arrays out; no scipy objects, no Python state.

Kernels are compiled lazily on first call (``cache=True``: later processes
load them from Numba's on-disk cache), so ``import fastjmt`` stays cheap.
"""

from .dense import cross_gram
from .neighbors import bipartite_knn_update, mnn_average, rp_forest_leaves, rp_tree_leaves
from .optim import logit_step_rows
from .sparse import masked_row_sums, nnz_balanced_bounds, spmm_rows, spmm_t_rows

__all__ = [
    "logit_step_rows",
    "cross_gram",
    "masked_row_sums",
    "mnn_average",
    "bipartite_knn_update",
    "rp_forest_leaves",
    "rp_tree_leaves",
    "nnz_balanced_bounds",
    "spmm_rows",
    "spmm_t_rows",
]

"""Numba kernels: raw arrays and scalars in, arrays out; no scipy objects, no Python state.

Kernels are compiled lazily on first call (``cache=True``: later processes
load them from Numba's on-disk cache), so ``import fastjmt`` stays cheap.
"""

from .cluster import cluster_sums, kmeans_assign
from .dense import (
    add_entropy_grad,
    add_masked_columns,
    axpby,
    entropy_value,
    cross_gram,
    frob_dot,
    recon_grad_u,
    small_matmul,
    weighted_colsum,
)
from .neighbors import bipartite_knn_update, mnn_average, rp_forest_leaves, rp_tree_leaves
from .optim import adam_rows, sgd_rows
from .softmax import softmax_backward, softmax_rows
from .sparse import masked_row_sums, nnz_balanced_bounds, scale_rows_inplace, spmm_rows, spmm_t_rows

__all__ = [
    "add_entropy_grad",
    "add_masked_columns",
    "entropy_value",
    "adam_rows",
    "axpby",
    "cluster_sums",
    "kmeans_assign",
    "cross_gram",
    "frob_dot",
    "masked_row_sums",
    "mnn_average",
    "bipartite_knn_update",
    "rp_forest_leaves",
    "rp_tree_leaves",
    "nnz_balanced_bounds",
    "recon_grad_u",
    "sgd_rows",
    "scale_rows_inplace",
    "small_matmul",
    "softmax_backward",
    "softmax_rows",
    "spmm_rows",
    "spmm_t_rows",
    "weighted_colsum",
]

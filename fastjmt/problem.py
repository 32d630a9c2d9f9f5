"""The problem's data types: both modalities as raw CSR arrays, the gene activity, the weights, the factors.

:func:`build_problem` turns prepared scipy CSR matrices into a :class:`Problem`;
everything below the API works on these types and raw NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .preprocess import row_sums
from .products import spmm_t_full

MODALITIES = ("atac", "rna")


@dataclass
class Modality:
    """One modality's data as raw CSR arrays (rows = cells) and the CSR of its transpose.

    Attributes
    ----------
    X, Xt : tuple of ndarray
        ``(indptr, indices, data)`` of the cells × features matrix and of its
        transpose; ``Xt`` is None in ``low_memory`` mode (products with ``Xᵀ``
        then scatter from ``X``).
    row_sums, col_sums : ndarray of float64
        ``X 1`` and ``Xᵀ 1``.
    sq_norm : float
        ``|X|²``.
    weight : float
        The term weight (a1 for ATAC, a2 for RNA).
    masked_cols : ndarray of int64
        Columns of K this modality's cells must stay out of (the other one's specific clusters).
    """

    X: tuple
    Xt: object  # tuple or None
    n: int
    p: int
    row_sums: np.ndarray
    col_sums: np.ndarray
    sq_norm: float
    weight: float
    masked_cols: np.ndarray


@dataclass
class Problem:
    """Everything fixed during a fit: both modalities, the gene activity matrix, the weights."""

    atac: Modality
    rna: Modality
    A: tuple  # CSR arrays of gene activity (genes × regions)
    At: tuple  # CSR arrays of its transpose (regions × genes)
    n_genes: int
    n_regions: int
    K: int
    a3: float
    a4: float
    a5: float
    a6: float
    dtype: np.dtype

    def modality(self, name: str) -> Modality:
        return self.atac if name == "atac" else self.rna


@dataclass
class Factors:
    """One modality's parameters: cell logits/memberships, feature logits/memberships, S, biases."""

    Z: np.ndarray  # cells × K logits
    C: np.ndarray  # cells × K, softmax(Z)
    Zf: np.ndarray  # features × K logits
    Cf: np.ndarray  # features × K, softmax(Zf)
    S: np.ndarray  # K × K
    b: np.ndarray  # cells
    c: np.ndarray  # features

    FIELDS = ("Z", "C", "Zf", "Cf", "S", "b", "c")

    def copy(self) -> "Factors":
        return Factors(*(np.array(getattr(self, a), copy=True) for a in self.FIELDS))


@dataclass
class Batch:
    """Rows and columns of one modality that a step looks at."""

    rows: np.ndarray  # int64 cell indices
    cols: np.ndarray  # int64 feature indices
    row_mask: np.ndarray  # uint8 per cell
    col_mask: np.ndarray  # uint8 per feature
    full: bool = field(default=False)

    @classmethod
    def whole(cls, n: int, p: int) -> "Batch":
        return cls(
            np.arange(n, dtype=np.int64),
            np.arange(p, dtype=np.int64),
            np.ones(n, dtype=np.uint8),
            np.ones(p, dtype=np.uint8),
            True,
        )


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``Z`` (a new array)."""
    # NumPy, not a kernel: it runs once per fit (the start), and a fit then needs one kernel
    # fewer compiled (the steps use kernels.logit_step_rows)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E.astype(Z.dtype, copy=False)


# --------------------------------------------------------------------------- building a problem


def transpose(X: sp.csr_matrix) -> sp.csr_matrix:
    """The CSR of ``Xᵀ``, sorted, with the same index dtype as ``X`` (scipy may narrow int64 to int32)."""
    Xt = X.T.tocsr()
    Xt.sort_indices()
    if Xt.indptr.dtype != X.indptr.dtype:
        Xt.indptr = Xt.indptr.astype(X.indptr.dtype)
        Xt.indices = Xt.indices.astype(X.indptr.dtype)
    return Xt


def modality(X: sp.csr_matrix, weight: float, masked_cols, low_memory: bool = False) -> Modality:
    """A :class:`Modality` from a canonical CSR matrix: its arrays, transpose (unless ``low_memory``) and sums."""
    X_arr = (X.indptr, X.indices, X.data)
    Xt_arr = None
    if not low_memory:
        Xt = transpose(X)
        Xt_arr = (Xt.indptr, Xt.indices, Xt.data)
    rs, row_sq = row_sums(X.indptr, X.data)
    if Xt_arr is not None:  # column sums are the row sums of the transpose (float64, no new kernel signature)
        col_sums, _ = row_sums(Xt.indptr, Xt.data)
    else:  # float64 scatter from the CSR
        col_sums = spmm_t_full(X_arr, None, X.shape[1], np.ones((X.shape[0], 1)))[:, 0]
    return Modality(X_arr, Xt_arr, X.shape[0], X.shape[1], rs, col_sums, float(row_sq.sum()), weight,
                    np.asarray(masked_cols, dtype=np.int64))


def masked_columns(n_shared: int, n_rna_only: int, n_atac_only: int) -> dict:
    """The columns of K each modality's cells must stay out of: the other modality's private clusters.

    Columns are laid out shared first, then RNA-only, then ATAC-only.
    """
    K = n_shared + n_rna_only + n_atac_only
    cols = np.arange(K)
    return {"rna": cols[n_shared + n_rna_only:], "atac": cols[n_shared:n_shared + n_rna_only]}


#: the reconstruction weight of each modality
WEIGHT_OF = {"atac": "a1", "rna": "a2"}


def build_problem(G: sp.csr_matrix, R: sp.csr_matrix, A: sp.csr_matrix, n_shared: int, n_rna_only: int,
                  n_atac_only: int, weights: dict, dtype, low_memory: bool = False) -> Problem:
    """The driver's view of prepared CSR inputs: raw arrays, transposes, sums, masks and weights.

    ``weights`` holds ``a1`` … ``a6``. The matrices must already be canonical CSR
    of ``dtype`` (see :func:`fastjmt.preprocess.to_csr`).
    """
    K = n_shared + n_rna_only + n_atac_only
    masked = masked_columns(n_shared, n_rna_only, n_atac_only)
    At = transpose(A)
    return Problem(
        atac=modality(R, weights[WEIGHT_OF["atac"]], masked["atac"], low_memory),
        rna=modality(G, weights[WEIGHT_OF["rna"]], masked["rna"], low_memory),
        A=(A.indptr, A.indices, A.data),
        At=(At.indptr, At.indices, At.data),
        n_genes=G.shape[1],
        n_regions=R.shape[1],
        K=K,
        a3=weights["a3"],
        a4=weights["a4"],
        a5=weights["a5"],
        a6=weights["a6"],
        dtype=np.dtype(dtype),
    )

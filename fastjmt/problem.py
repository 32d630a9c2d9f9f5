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

    def as_mosaic(self) -> "Mosaic":
        """This problem as the mosaic of one ATAC batch ``"atac"`` and one RNA batch ``"rna"``."""
        return Mosaic([Block(m, m, m, self.modality(m)) for m in MODALITIES],
                      {m: (self.modality(m).n, self.modality(m).masked_cols) for m in MODALITIES},
                      self.A, self.At, self.n_genes, self.n_regions, self.K, self.a3, self.a4, self.a5, self.a6,
                      self.dtype)


@dataclass
class Block:
    """One matrix of a mosaic: the cells of batch ``batch`` measured in modality ``modality`` (``"rna"`` or
    ``"atac"``). ``name`` keys its association ``S`` and cell biases ``b``."""

    name: str
    batch: str
    modality: str
    data: Modality


@dataclass
class Mosaic:
    """A fit's matrices as blocks (docs/mosaic.md): batches of cells, each measured in one or both modalities.

    Every batch has one membership matrix C shared by its blocks; every block
    its own association S and cell biases; each modality one feature membership
    matrix and feature biases shared by its blocks. The blocks are in the order
    an epoch visits them (:func:`fastjmt.driver.block_epoch`): batches with ATAC
    only, then paired batches, then batches with RNA only; within a batch ATAC
    first. The unpaired two-matrix fit is the mosaic of one ATAC batch
    ``"atac"`` and one RNA batch ``"rna"`` (:meth:`Problem.as_mosaic`).
    """

    blocks: list  # of Block, in epoch order
    batches: dict  # batch name -> (number of cells, int64 columns its cells must stay out of), in epoch order
    A: tuple
    At: tuple
    n_genes: int
    n_regions: int
    K: int
    a3: float
    a4: float
    a5: float
    a6: float
    dtype: np.dtype
    cache: dict = field(default_factory=dict, repr=False)  # sums of the data the epochs reuse (driver._col_sums)

    def blocks_of_batch(self, batch: str) -> list:
        return [b for b in self.blocks if b.batch == batch]

    def blocks_of_modality(self, modality: str) -> list:
        return [b for b in self.blocks if b.modality == modality]

    def modalities(self) -> list:
        """The modalities present, ATAC first (the order of the feature steps)."""
        return [m for m in MODALITIES if any(b.modality == m for b in self.blocks)]


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
class Cells:
    """One batch's cell logits and memberships (cells × K), shared by the batch's blocks."""

    Z: np.ndarray
    C: np.ndarray


@dataclass
class Features:
    """One modality's feature logits, memberships (features × K) and feature biases, shared by its blocks."""

    Zf: np.ndarray
    Cf: np.ndarray
    c: np.ndarray


@dataclass
class BlockFactors:
    """One block's association ``S`` (K × K) and cell biases ``b``."""

    S: np.ndarray
    b: np.ndarray


@dataclass
class MosaicParams:
    """Every parameter of a mosaic fit: ``cells[batch]``, ``features[modality]``, ``blocks[block name]``.

    :meth:`of_factors` views a two-matrix fit's ``{"atac": Factors, "rna": Factors}``
    as one (the same arrays, no copy), so the two-matrix epoch is the mosaic epoch.
    """

    cells: dict
    features: dict
    blocks: dict

    @classmethod
    def of_factors(cls, params: dict) -> "MosaicParams":
        return cls({m: Cells(f.Z, f.C) for m, f in params.items()},
                   {m: Features(f.Zf, f.Cf, f.c) for m, f in params.items()},
                   {m: BlockFactors(f.S, f.b) for m, f in params.items()})

    def copy(self) -> "MosaicParams":
        def dup(obj):
            return type(obj)(*(np.array(v, copy=True) for v in vars(obj).values()))

        return MosaicParams({k: dup(v) for k, v in self.cells.items()},
                            {k: dup(v) for k, v in self.features.items()},
                            {k: dup(v) for k, v in self.blocks.items()})

    def pack(self, prefix: str, arrays: dict) -> None:
        """Every array into ``arrays`` under ``prefix``, by position (batch names may hold any character)."""
        for i, v in enumerate(self.cells.values()):
            arrays[f"{prefix}/cells{i}/Z"], arrays[f"{prefix}/cells{i}/C"] = v.Z, v.C
        for m, v in self.features.items():
            for name in ("Zf", "Cf", "c"):
                arrays[f"{prefix}/features/{m}/{name}"] = getattr(v, name)
        for i, v in enumerate(self.blocks.values()):
            arrays[f"{prefix}/blocks{i}/S"], arrays[f"{prefix}/blocks{i}/b"] = v.S, v.b

    @classmethod
    def unpack(cls, arrays, prefix: str, like: "MosaicParams") -> "MosaicParams":
        """:meth:`pack`'s arrays back, in the layout (names and order) of ``like``."""
        def get(key):
            return np.array(arrays[f"{prefix}/{key}"])

        return cls({k: Cells(get(f"cells{i}/Z"), get(f"cells{i}/C")) for i, k in enumerate(like.cells)},
                   {m: Features(get(f"features/{m}/Zf"), get(f"features/{m}/Cf"), get(f"features/{m}/c"))
                    for m in like.features},
                   {k: BlockFactors(get(f"blocks{i}/S"), get(f"blocks{i}/b")) for i, k in enumerate(like.blocks)})

    def arrays(self) -> dict:
        """The stepped blocks by optimiser key: ``Z_<batch>``, ``S_<block>``, ``Zf_<modality>``."""
        out = {"Z_" + k: v.Z for k, v in self.cells.items()}
        out.update({"S_" + k: v.S for k, v in self.blocks.items()})
        out.update({"Zf_" + k: v.Zf for k, v in self.features.items()})
        return out


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

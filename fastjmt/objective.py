"""The scJMT objective in factored form (DESIGN.md §1–§2) and its hand-derived gradients.

Terms (minimised)::

    L = a1 · |R − U_a V_aᵀ − b_a 1ᵀ − 1 c_aᵀ|² / (n_a p_a)        U_a = C_atac S_atac, V_a = C_regions
      + a2 · |G − U_r V_rᵀ − b_r 1ᵀ − 1 c_rᵀ|² / (n_r p_r)        U_r = C_rna  S_rna,  V_r = C_genes
      − a3 · cos(S_atac, S_rna)
      − a4 · cos(C_genes, A C_regions)
      + a5 · (|C_rna[:, atac-only]|² / n_r + |C_atac[:, rna-only]|² / n_a)
      + a6 · (H(C_rna) / n_r + H(C_atac) / n_a)                 H = row entropies, summed

``cos(X, Y) = ⟨X, Y⟩ / (|X| |Y|)``. The reconstruction error is expanded so that
only ``Σ_{nnz} X_ij ⟨U_i, V_j⟩`` touches the data; everything else is a K × K Gram
product. No function here allocates an array with one axis over cells and the
other over features.

Everything here works on a *batch*: the rows (cells) ``I`` and columns
(features) ``J`` of one modality; with full batches, ``I`` and ``J`` are all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from . import kernels as kn

MODALITIES = ("atac", "rna")
TERMS = ("recon_atac", "recon_rna", "cos_S", "cos_features", "mask", "entropy")


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

    def copy(self) -> "Factors":
        return Factors(*(np.array(a, copy=True) for a in (self.Z, self.C, self.Zf, self.Cf, self.S, self.b, self.c)))


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


# --------------------------------------------------------------------------- helpers


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``Z`` (a new array)."""
    # NumPy, not kernels.softmax_rows: it runs once per fit (the start), and a fit
    # then needs one kernel fewer compiled (the steps use kernels.logit_step_rows)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E.astype(Z.dtype, copy=False)


def matmul(A: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``A @ M`` for tall ``A`` and small ``M``, in ``A``'s dtype."""
    # a tall-skinny times K × K product is BLAS's job (one BLAS thread inside a fit, see
    # _threads.fit_threads); a Numba kernel for it would only add compile time
    return np.dot(A, np.ascontiguousarray(M, dtype=A.dtype))


def frob(A: np.ndarray, B: np.ndarray) -> float:
    """``⟨A, B⟩ = tr(AᵀB)`` in float64, through ``kernels.cross_gram``.

    K times the flops of a plain dot product, but the fit already compiles
    ``cross_gram`` (Gram matrices) and this keeps a first fit from compiling one
    more parallel kernel; the K × K product is cheap next to a sparse product.
    """
    return float(np.trace(kn.cross_gram(np.ascontiguousarray(A), np.ascontiguousarray(B))))


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
    """``X[rows][:, col_mask] @ B[col_mask]`` from CSR arrays (column indices sorted within rows)."""
    out = np.empty((rows.shape[0], B.shape[1]), dtype=B.dtype)
    block = column_block(csr[0], B.shape[0], B.shape[1], B.dtype.itemsize)
    kn.spmm_rows(csr[0], csr[1], csr[2], rows, kernel_mask(col_mask), B, out, work_chunks(), block)
    return out


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


@dataclass
class SideStats:
    """K × K and K-vector summaries of one side (U with b, or V with c) of a reconstruction."""

    gram: np.ndarray  # MᵀM
    ones: np.ndarray  # Mᵀ1
    bias: np.ndarray  # Mᵀ(bias vector)
    bias_sum: float
    bias_sq: float


def side_stats(M: np.ndarray, bias: np.ndarray) -> SideStats:
    """Summaries of a tall factor ``M`` and the bias vector on the same axis."""
    W = np.empty((M.shape[0], 2), dtype=M.dtype)  # [1, bias]: Mᵀ1 and Mᵀbias from one cross_gram
    W[:, 0] = 1
    W[:, 1] = bias
    M = np.ascontiguousarray(M)
    MtW = kn.cross_gram(M, W)
    return SideStats(
        kn.cross_gram(M, M),
        np.ascontiguousarray(MtW[:, 0]),
        np.ascontiguousarray(MtW[:, 1]),
        float(np.sum(bias, dtype=np.float64)),
        float(np.dot(bias.astype(np.float64), bias.astype(np.float64))),
    )


def recon_value(sq_norm, bilinear, row_sums, col_sums, U, su: SideStats, V, sv: SideStats, b, c) -> float:
    """``|X − U Vᵀ − b 1ᵀ − 1 cᵀ|² / (n p)`` from the factored expansion (DESIGN.md §2)."""
    n, p = U.shape[0], V.shape[0]
    val = (
        sq_norm
        - 2.0 * bilinear
        - 2.0 * float(np.dot(b.astype(np.float64), row_sums))
        - 2.0 * float(np.dot(c.astype(np.float64), col_sums))
        + float(np.sum(su.gram * sv.gram))
        + p * su.bias_sq
        + n * sv.bias_sq
        + 2.0 * float(np.dot(su.bias, sv.ones))
        + 2.0 * float(np.dot(su.ones, sv.bias))
        + 2.0 * su.bias_sum * sv.bias_sum
    )
    return max(val, 0.0) / (n * p)


def recon_grad(XB: np.ndarray, M: np.ndarray, other: SideStats, bias: np.ndarray, coef: float) -> np.ndarray:
    """Gradient of ``coef/2 · |X − U Vᵀ − b1ᵀ − 1cᵀ|²`` with respect to one side ``M``.

    For ``M = U`` pass ``XB = X V``, ``other = side_stats(V, c)`` and ``bias = b``;
    for ``M = V`` pass ``XB = Xᵀ U``, ``other = side_stats(U, b)`` and ``bias = c``.
    ``coef · (M G + bias (O1)ᵀ + 1 (Oᵀ bias_O)ᵀ − XB)`` with ``G = OᵀO``, in ``M``'s dtype.
    """
    dt = M.dtype
    out = M @ other.gram.astype(dt)  # O(rows · K²) on BLAS (one thread inside a fit); no kernel to compile
    out += np.asarray(bias, dtype=dt)[:, None] * other.ones.astype(dt)
    out += other.bias.astype(dt)
    out -= XB
    out *= dt.type(coef)
    return out


def closed_form_bias(x_sums: np.ndarray, M: np.ndarray, other: SideStats, n_other: int) -> np.ndarray:
    """Minimiser of the squared error over one bias vector, the other fixed.

    ``b = (X 1 − U (Vᵀ1) − (1ᵀc) 1) / p`` (and symmetrically for ``c``).
    """
    Mv = np.dot(M, other.ones.astype(M.dtype))
    return ((x_sums - Mv - other.bias_sum) / n_other).astype(M.dtype)


def cosine_and_grads(X: np.ndarray, Y: np.ndarray):
    """``cos(X, Y)`` and its gradients with respect to ``X`` and ``Y``.

    ``d cos / dX = Y / (|X||Y|) − ⟨X,Y⟩ X / (|X|³ |Y|)`` and symmetrically for ``Y``.
    A zero norm gives cosine 0 and zero gradients (the term is then flat).
    """
    xx = frob(X, X)
    yy = frob(Y, Y)
    xy = frob(X, Y)
    gx = np.empty_like(X)
    gy = np.empty_like(Y)
    if xx <= 0.0 or yy <= 0.0:
        gx[:] = 0
        gy[:] = 0
        return 0.0, gx, gy
    nx, ny = np.sqrt(xx), np.sqrt(yy)
    cos = xy / (nx * ny)
    # features × K or K × K: NumPy (one kernel fewer to compile; O(p K), not on the cells)
    np.add(Y * (1.0 / (nx * ny)), X * (-xy / (nx**3 * ny)), out=gx, casting="unsafe")
    np.add(X * (1.0 / (nx * ny)), Y * (-xy / (nx * ny**3)), out=gy, casting="unsafe")
    return cos, gx, gy


def mask_value(C: np.ndarray, cols: np.ndarray) -> float:
    """``|C[:, cols]|² / n`` (0 when no column is masked)."""
    if cols.size == 0 or C.shape[0] == 0:
        return 0.0
    sub = np.ascontiguousarray(C[:, cols])
    return frob(sub, sub) / C.shape[0]


def entropy_mean(C: np.ndarray) -> float:
    """Mean row entropy ``H(C) / n`` of a membership matrix."""
    if not C.shape[0]:
        return 0.0
    # NumPy in float64, one chunk of rows at a time (bounded temporaries); deterministic
    total = 0.0
    for start in range(0, C.shape[0], 65536):
        x = C[start:start + 65536].astype(np.float64)
        total -= float(np.sum(x * np.log(np.maximum(x, 1e-300))))  # 0 · log(1e-300) = 0: 0 log 0 = 0
    return total / C.shape[0]


def add_cell_penalty_grads(gC: np.ndarray, C: np.ndarray, masked_cols: np.ndarray, a5: float, a6: float):
    """Add the gradients of the mask term and of the entropy term (per-cell means) to ``gC`` in place.

    ``d/dC (a5 |C[:, cols]|² / n) = 2 a5 C[:, cols] / n``;
    ``d/dC (a6 H(C) / n) = −a6 (log C + 1) / n``.
    """
    n = C.shape[0]
    if masked_cols.size and a5:
        kn.add_masked_columns(gC, C, masked_cols, 2.0 * a5 / n)
    if a6:
        kn.add_entropy_grad(gC, C, a6 / n)


def feature_coupling(problem: Problem, C_genes: np.ndarray, C_regions: np.ndarray):
    """``cos(C_genes, A C_regions)`` and its gradients with respect to C_genes and C_regions.

    The gradient reaches C_regions through ``Aᵀ``: ``d/dC_regions = Aᵀ (d cos / dP)``.
    """
    P = spmm(problem.A, np.arange(problem.n_genes, dtype=np.int64), np.ones(problem.n_regions, np.uint8), C_regions)
    cos, g_genes, g_P = cosine_and_grads(C_genes, P)
    g_regions = spmm_t_full(problem.A, problem.At, problem.n_regions, g_P)
    return cos, g_genes, g_regions


# --------------------------------------------------------------------------- whole objective


def total_loss(terms: dict, problem: Problem) -> float:
    """Weighted sum of the term values in ``terms`` (reconstruction terms already weighted)."""
    return (
        terms["recon_atac"]
        + terms["recon_rna"]
        - problem.a3 * terms["cos_S"]
        - problem.a4 * terms["cos_features"]
        + problem.a5 * terms["mask"]
        + problem.a6 * terms["entropy"]
    )


def evaluate(problem: Problem, params: dict, with_grad: bool = True):
    """Every term of the objective on full batches and, if asked, the gradient of ``L`` for every block.

    Returns
    -------
    terms : dict
        ``recon_atac`` and ``recon_rna`` (weighted by a1, a2), ``cos_S``, ``cos_features``,
        ``mask``, ``entropy`` (unweighted) and ``total``.
    grads : dict or None
        ``Z_atac, Z_rna, Z_regions, Z_genes`` (with respect to the logits),
        ``S_atac, S_rna``.
    """
    terms = {}
    gC, gCf, gS = {}, {}, {}
    for name in MODALITIES:
        mod = problem.modality(name)
        f = params[name]
        batch = Batch.whole(mod.n, mod.p)
        U = matmul(f.C, f.S)
        su, sv = side_stats(U, f.b), side_stats(f.Cf, f.c)
        XV = spmm(mod.X, batch.rows, batch.col_mask, f.Cf)
        bil = frob(U, XV)
        terms["recon_" + name] = mod.weight * recon_value(
            mod.sq_norm, bil, mod.row_sums, mod.col_sums, U, su, f.Cf, sv, f.b, f.c
        )
        if not with_grad:
            continue
        coef = 2.0 * mod.weight / (mod.n * mod.p)
        gU = recon_grad(XV, U, sv, f.b, coef)
        gC[name] = matmul(gU, f.S.T)
        gS[name] = kn.cross_gram(f.C, gU)
        XtU = spmm_t(mod.X, mod.Xt, batch.rows, batch.row_mask, batch.cols, batch.col_mask, U)
        gCf[name] = recon_grad(XtU, f.Cf, su, f.c, coef)
    terms["mask"] = sum(mask_value(params[m].C, problem.modality(m).masked_cols) for m in MODALITIES)
    terms["entropy"] = sum(entropy_mean(params[m].C) for m in MODALITIES)
    cos_s, gsa, gsr = cosine_and_grads(params["atac"].S, params["rna"].S)
    cos_f, g_genes, g_regions = feature_coupling(problem, params["rna"].Cf, params["atac"].Cf)
    terms["cos_S"], terms["cos_features"] = cos_s, cos_f
    terms["total"] = total_loss(terms, problem)
    if not with_grad:
        return terms, None
    grads = {}
    for name, g_cos_s in (("atac", gsa), ("rna", gsr)):
        mod, f = problem.modality(name), params[name]
        add_cell_penalty_grads(gC[name], f.C, mod.masked_cols, problem.a5, problem.a6)
        gz = np.empty_like(f.Z)
        kn.softmax_backward(f.C, gC[name], gz)
        grads["Z_" + name] = gz
        grads["S_" + name] = gS[name] - problem.a3 * g_cos_s
    for name, feat, g_cos in (("atac", "regions", g_regions), ("rna", "genes", g_genes)):
        f = params[name]
        g = gCf[name]
        kn.axpby(1.0, g, -problem.a4, g_cos, g)
        gz = np.empty_like(f.Zf)
        kn.softmax_backward(f.Cf, g, gz)
        grads["Z_" + feat] = gz
    return terms, grads

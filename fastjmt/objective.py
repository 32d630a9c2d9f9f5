"""The scJMT objective in factored form (docs/model.md) and its hand-derived gradients.

This module is the only place that knows the loss and the gradient of every
block: the fit's steps (:mod:`fastjmt.driver`) and :func:`evaluate` (what the
gradient tests check) call the same per-block functions below.

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

Every block function works on a *batch*: the rows (cells) ``I`` and columns
(features) ``J`` of one modality (:class:`BatchStats`); with full batches, ``I``
and ``J`` are all. The coefficients are chosen so that, over random batches,
each term's expected gradient on a block equals its full-batch gradient
(the step only touches the rows and columns in the batch; see
:func:`batch_stats`).

Per block (one modality's cells, its association S, its features)::

    cell_grad         → LogitGrad: dL/dU_I (then · Sᵀ), mask and entropy coefficients
    association_grad  → dL/dS
    feature_grad      → LogitGrad: dL/dV_J, the feature coupling and its coefficient
    refit_biases      → the closed-form minimisers of b and c

A :class:`LogitGrad` is the gradient with respect to the memberships in pieces,
as the fused kernel ``kernels.logit_step_rows`` takes them (it adds the pieces,
goes back through the softmax and steps, in one pass over the rows);
:func:`logit_gradient` runs the same kernel in its gradient-only mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels as kn
from .preprocess import row_sums as abs_row_sums
from .problem import MODALITIES, Batch, Factors, Modality, Mosaic, MosaicParams, Problem
from .products import frob, gram, masked_row_sums, matmul, spmm, spmm_all, spmm_t, spmm_t_full

TERMS = ("recon_atac", "recon_rna", "cos_S", "cos_features", "mask", "entropy")


# --------------------------------------------------------------------------- reconstruction


@dataclass
class SideStats:
    """K × K and K-vector summaries of one side (U with b, or V with c) of a reconstruction."""

    gram: np.ndarray  # MᵀM
    ones: np.ndarray  # Mᵀ1
    bias: np.ndarray  # Mᵀ(bias vector)
    bias_sum: float
    bias_sq: float

    def __add__(self, other: "SideStats") -> "SideStats":
        """The summaries of the rows of both (every field is a sum over rows): how row chunks combine."""
        return SideStats(self.gram + other.gram, self.ones + other.ones, self.bias + other.bias,
                         self.bias_sum + other.bias_sum, self.bias_sq + other.bias_sq)


def side_stats(M: np.ndarray, bias: np.ndarray) -> SideStats:
    """Summaries of a tall factor ``M`` and the bias vector on the same axis."""
    W = np.empty((M.shape[0], 2), dtype=M.dtype)  # [1, bias]: Mᵀ1 and Mᵀbias from one Gram product
    W[:, 0] = 1
    W[:, 1] = bias
    M = np.ascontiguousarray(M)
    MtW = gram(M, W)
    return SideStats(
        gram(M, M),
        np.ascontiguousarray(MtW[:, 0]),
        np.ascontiguousarray(MtW[:, 1]),
        float(np.sum(bias, dtype=np.float64)),
        float(np.dot(bias.astype(np.float64), bias.astype(np.float64))),
    )


def recon_value(sq_norm, bilinear, row_sums, col_sums, U, su: SideStats, V, sv: SideStats, b, c) -> float:
    """``|X − U Vᵀ − b 1ᵀ − 1 cᵀ|² / (n p)`` from the factored expansion (docs/model.md)."""
    return recon_value_of_sums(sq_norm, bilinear, bias_dot(b, row_sums), bias_dot(c, col_sums), U.shape[0],
                               V.shape[0], su, sv)


def bias_dot(bias: np.ndarray, sums: np.ndarray) -> float:
    """``⟨bias, sums⟩`` in float64: a bias vector against the data's row (or column) sums."""
    return float(np.dot(bias.astype(np.float64), sums))


def recon_value_of_sums(sq_norm, bilinear, b_dot_rows, c_dot_cols, n, p, su: SideStats, sv: SideStats) -> float:
    """:func:`recon_value` from sums over the rows alone (``b_dot_rows = ⟨b, X1⟩``, ``c_dot_cols = ⟨c, Xᵀ1⟩``,
    ``su`` and ``bilinear`` summed over row chunks), for a fit whose cells live in chunks."""
    val = (
        sq_norm
        - 2.0 * bilinear
        - 2.0 * b_dot_rows
        - 2.0 * c_dot_cols
        + float(np.sum(su.gram * sv.gram))
        + p * su.bias_sq
        + n * sv.bias_sq
        + 2.0 * float(np.dot(su.bias, sv.ones))
        + 2.0 * float(np.dot(su.ones, sv.bias))
        + 2.0 * su.bias_sum * sv.bias_sum
    )
    return max(val, 0.0) / (n * p)


def recon_term(mod: Modality, bs: "BatchStats", bilinear: float, U, su: SideStats, V, sv: SideStats, b, c) -> float:
    """The weighted reconstruction term ``w · |X − U Vᵀ − b1ᵀ − 1cᵀ|² / (n p)`` of one modality.

    ``bilinear = ⟨U, X V⟩ = ⟨V, Xᵀ U⟩``, the data's only contribution, read off
    whichever product the caller has just made.
    """
    return mod.weight * recon_value(bs.sq_norm, bilinear, bs.row_sums, bs.col_sums, U, su, V, sv, b, c)


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


def refit_biases(mod: Modality, f: Factors, cells_first: bool, U=None, known: SideStats = None) -> SideStats:
    """Set both bias vectors of a modality to their closed-form minimisers, one after the other (in place):
    :func:`cell_bias` and :func:`feature_bias`, what the epoch's steps use, for one block.

    Uses all cells and features even in mini-batch mode: the closed forms need
    only the precomputed row and column sums of X and K-sized summaries of the
    factors, no pass over the data.

    ``known`` is the caller's ``side_stats`` of the side the first refit reads
    (``side_stats(Cf, c)`` when ``cells_first``, else ``side_stats(C S, b)``),
    when it has them for the current factors. Returns the side stats the second
    refit read (``side_stats(C S, b)`` with the new ``b``, or ``side_stats(Cf, c)``
    with the new ``c``): they stay valid after it, since it changes the other side.
    """
    U = matmul(f.C, f.S) if U is None else U
    if cells_first:
        f.b[:] = cell_bias(mod, U, side_stats(f.Cf, f.c) if known is None else known)
        last = side_stats(U, f.b)
        f.c[:] = feature_bias([(mod, last)], f.Cf)
    else:
        f.c[:] = feature_bias([(mod, side_stats(U, f.b) if known is None else known)], f.Cf)
        last = side_stats(f.Cf, f.c)
        f.b[:] = cell_bias(mod, U, last)
    return last


def cell_factor(C: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``U = C S``, the cell side of a reconstruction (rows × K, ``C``'s dtype)."""
    return matmul(C, S)


def recon_after_feature_step(mod: Modality, bs: "BatchStats", XtU: np.ndarray, U: np.ndarray, V: np.ndarray,
                             sv: SideStats, b: np.ndarray, c: np.ndarray) -> float:
    """The weighted reconstruction term after a full-batch feature step, read off the step's own product
    ``XtU = Xᵀ U`` (no further pass over the data); ``sv = side_stats(V, c)`` at the new point."""
    return recon_term(mod, bs, frob(V, XtU), U, side_stats(U, b), V, sv, b, c)


def fit_association(mod: Modality, f: Factors, ridge: float = 1e-6) -> None:
    """Least-squares ``S`` given C and V, then closed-form biases, then ``S`` again given them (in place).

    ``S = (CᵀC + λ)⁻¹ Cᵀ(X − b1ᵀ − 1cᵀ)V (VᵀV + λ)⁻¹`` with ``Cᵀ(X − b1ᵀ − 1cᵀ)V = CᵀXV − (Cᵀb)(Vᵀ1)ᵀ −
    (Cᵀ1)(Vᵀc)ᵀ`` and a ridge ``λ = ridge · max(tr, 1)`` on each Gram matrix: the minimiser of the
    reconstruction term over S (the start's S; the couplings are left to the fit).
    """
    n, p = mod.n, mod.p
    XV = spmm(mod.X, np.arange(n, dtype=np.int64), np.ones(p, np.uint8), f.Cf)  # gram accumulates in float64
    CtC = gram(f.C, f.C)
    VtV = gram(f.Cf, f.Cf)
    K = CtC.shape[0]
    CtXV = gram(f.C, XV)
    lam_c = ridge * max(np.trace(CtC), 1.0)
    lam_v = ridge * max(np.trace(VtV), 1.0)
    Ci = np.linalg.inv(CtC + lam_c * np.eye(K))
    Vi = np.linalg.inv(VtV + lam_v * np.eye(K))
    f.b[:] = 0
    f.c[:] = 0
    for _ in range(2):
        sc, sv = side_stats(f.C, f.b), side_stats(f.Cf, f.c)
        rhs = CtXV - np.outer(sc.bias, sv.ones) - np.outer(sc.ones, sv.bias)
        f.S[:] = (Ci @ rhs @ Vi).astype(f.S.dtype)
        U = matmul(f.C, f.S)
        f.b[:] = closed_form_bias(mod.row_sums, U, side_stats(f.Cf, f.c), p)
        f.c[:] = closed_form_bias(mod.col_sums, f.Cf, side_stats(U, f.b), n)


def program_activity(mod: Modality, V: np.ndarray, XV: np.ndarray = None) -> np.ndarray:
    """``(X V) / (X 1)`` per cell: the share of a cell's (preprocessed) signal in each feature cluster.

    With negative values (``preprocess=False``) a row sum can be 0 or negative;
    the denominator is then ``|X| 1`` for every cell, which keeps each program
    activity finite and in [−1, 1]. Cells without data get 0. ``XV``: the
    product ``X V`` when the caller has it. In ``V``'s dtype.
    """
    XV = spmm_all(mod.X, mod.p, V) if XV is None else XV
    data = mod.X[2]
    denom = mod.row_sums
    if data.size and data.min() < 0:
        denom, _ = abs_row_sums(mod.X[0], np.abs(data))
    out = np.zeros_like(XV, dtype=np.float64)
    np.divide(XV, denom[:, None], out=out, where=denom[:, None] > 0)
    return out.astype(V.dtype)


# --------------------------------------------------------------------------- couplings and penalties


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


def feature_coupling(problem: Problem, C_genes: np.ndarray, C_regions: np.ndarray):
    """``cos(C_genes, A C_regions)`` and its gradients with respect to C_genes and C_regions.

    The gradient reaches C_regions through ``Aᵀ``: ``d/dC_regions = Aᵀ (d cos / dP)``.
    """
    P = spmm_all(problem.A, problem.n_regions, C_regions)
    cos, g_genes, g_P = cosine_and_grads(C_genes, P)
    g_regions = spmm_t_full(problem.A, problem.At, problem.n_regions, g_P)
    return cos, g_genes, g_regions


def mask_sum(C: np.ndarray, cols: np.ndarray) -> float:
    """``|C[:, cols]|²`` (0 when no column is masked): a sum over rows."""
    if cols.size == 0 or C.shape[0] == 0:
        return 0.0
    sub = np.ascontiguousarray(C[:, cols])
    return frob(sub, sub)


def mask_value(C: np.ndarray, cols: np.ndarray) -> float:
    """``|C[:, cols]|² / n`` (0 when no column is masked)."""
    return mask_sum(C, cols) / C.shape[0] if C.shape[0] else 0.0


def entropy_sum(C: np.ndarray) -> float:
    """Total row entropy ``H(C)`` of a membership matrix: a sum over rows."""
    # NumPy in float64, one chunk of rows at a time (bounded temporaries); deterministic
    total = 0.0
    for start in range(0, C.shape[0], 65536):
        x = C[start:start + 65536].astype(np.float64)
        total -= float(np.sum(x * np.log(np.maximum(x, 1e-300))))  # 0 · log(1e-300) = 0: 0 log 0 = 0
    return total


def entropy_mean(C: np.ndarray) -> float:
    """Mean row entropy ``H(C) / n`` of a membership matrix."""
    return entropy_sum(C) / C.shape[0] if C.shape[0] else 0.0


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


def complete_terms(problem: Problem, params: dict, recon: dict, cell_terms: dict = None) -> dict:
    """Every term and the total of a two-matrix fit, from the two weighted reconstruction terms ``recon``
    (by modality): :func:`mosaic_terms` of the fit seen as a mosaic.

    ``cell_terms``: the per-cell terms ``{"mask": …, "entropy": …}`` (means over each modality's cells, summed
    over modalities) when the caller has them from the cells' row chunks; otherwise from ``params``.
    """
    return mosaic_terms(problem.as_mosaic(), MosaicParams.of_factors(params), recon, cell_terms)


def mosaic_terms(mosaic: Mosaic, mp: MosaicParams, recon: dict, cell_terms: dict = None) -> dict:
    """Every term and the total, from each block's weighted reconstruction term ``recon[block name]``.

    ``recon_atac`` / ``recon_rna`` sum the blocks of each modality; ``cos_S`` is
    :func:`association_coupling_value` over every block's S; ``mask`` and ``entropy``
    sum each batch's means over its cells (``cell_terms`` when the caller has them).
    """
    terms = {"recon_" + m: sum(recon[b.name] for b in mosaic.blocks_of_modality(m)) for m in MODALITIES}
    terms["cos_S"] = association_coupling_value([mp.blocks[b.name].S for b in mosaic.blocks])
    terms["cos_features"], _, _ = feature_coupling(mosaic, mp.features["rna"].Cf, mp.features["atac"].Cf)
    if cell_terms is not None:
        terms["mask"], terms["entropy"] = cell_terms["mask"], cell_terms["entropy"]
    else:
        terms["mask"] = sum(mask_value(mp.cells[k].C, masked) for k, (_, masked) in mosaic.batches.items())
        terms["entropy"] = sum(entropy_mean(mp.cells[k].C) for k in mosaic.batches)
    terms["total"] = total_loss(terms, mosaic)
    return terms


# --------------------------------------------------------------------------- per-block gradients


@dataclass
class BatchStats:
    """One modality's data seen through a batch: sums over its rows ``I`` and columns ``J``, and the scales.

    ``coef = 2 w / (|I| |J|)`` is the reconstruction gradient's coefficient. A
    full gradient has ``2 w / (n p)`` and sums over all cells and features; the
    batch sums over ``I × J`` only, and the step touches a cell (feature) only
    when it is in the batch, with probability ``|I| / n`` (``|J| / p``), so the
    expected update of every block equals the full gradient. The per-cell mask
    and entropy terms are means over the batch's cells (``/ |I|`` for ``/ n``),
    and the feature coupling, a sum over all features, is scaled by
    ``feature_scale = p / |J|`` (1 for a full batch).
    """

    rows: np.ndarray
    cols: np.ndarray
    row_sums: np.ndarray
    col_sums: np.ndarray
    sq_norm: float
    coef: float
    feature_scale: float
    n_cells: int = -1  # |I|, the cells the per-cell means divide by; -1: rows.size (a row chunk passes the total)

    @property
    def cells(self) -> int:
        return self.rows.size if self.n_cells < 0 else self.n_cells


def recon_coef(weight: float, n_cells: int, n_features: int) -> float:
    """The reconstruction gradient's coefficient ``2 w / (|I| |J|)`` of a batch (:class:`BatchStats`)."""
    return 2.0 * weight / (n_cells * n_features)


def feature_scale(p: int, n_features: int) -> float:
    """The feature coupling's scale ``p / |J|`` in a batch of ``n_features`` features (:class:`BatchStats`)."""
    return p / n_features


def batch_stats(mod: Modality, batch: Batch) -> BatchStats:
    """:class:`BatchStats` of one modality for ``batch`` (one pass over the batch's nonzeros unless full)."""
    I, J = batch.rows, batch.cols
    if batch.full:
        row_sums, col_sums, sq_norm = mod.row_sums, mod.col_sums, mod.sq_norm
    else:
        row_sums, rq = masked_row_sums(mod.X, I, batch.col_mask)
        col_sums = spmm_t(mod.X, mod.Xt, I, batch.row_mask, J, batch.col_mask, np.ones((I.size, 1)))[:, 0]
        sq_norm = float(rq.sum())
    return BatchStats(I, J, row_sums, col_sums, sq_norm, recon_coef(mod.weight, I.size, J.size),
                      feature_scale(mod.p, J.size))


@dataclass
class LogitGrad:
    """The gradient of ``L`` with respect to a batch's memberships ``C`` (rows × K), in pieces::

        dL/dC = G Mᵀ (or G when M is None) + extra_coef · extra
                + mask_coef · C on the columns mask_cols − ent_coef · (log C + 1)

    as :func:`kernels.logit_step_rows` adds them before the softmax's backward pass.
    """

    G: np.ndarray
    M: object = None  # K × K or None
    extra: object = None  # rows × K or None
    extra_coef: float = 0.0
    mask_cols: object = None  # int64 columns or None
    mask_coef: float = 0.0
    ent_coef: float = 0.0


def cell_grad(problem: Problem, mod: Modality, bs: BatchStats, XV: np.ndarray, C_I: np.ndarray, S: np.ndarray,
              sv: SideStats, b_I: np.ndarray) -> LogitGrad:
    """The gradient on the batch's cell memberships ``C_I``: reconstruction through S, mask, entropy.

    ``XV = X[I][:, J] V_J``, ``sv = side_stats(V_J, c_J)``.
    ``d/dC (a5 |C[:, cols]|² / n) = 2 a5 C[:, cols] / n``, ``d/dC (a6 H(C) / n) = −a6 (log C + 1) / n``
    (means over the batch's cells: ``/ |I|`` in place of ``/ n``).
    """
    n = bs.cells
    gU = recon_grad(XV, matmul(C_I, S), sv, b_I, bs.coef)
    return LogitGrad(gU, M=S, mask_cols=mod.masked_cols if problem.a5 else None,
                     mask_coef=2.0 * problem.a5 / n, ent_coef=problem.a6 / n)


def association_grad(problem: Problem, bs: BatchStats, XV: np.ndarray, C_I: np.ndarray, S: np.ndarray,
                     sv: SideStats, b_I: np.ndarray, other_S: np.ndarray) -> np.ndarray:
    """``dL/dS`` of one modality (float64, K × K): ``C_Iᵀ dL/dU_I − a3 d cos(S, S_other)/dS``."""
    return association_recon_grad(bs, XV, C_I, S, sv, b_I) + association_coupling_grad(problem, S, other_S)


def association_recon_grad(bs: BatchStats, XV: np.ndarray, C_I: np.ndarray, S: np.ndarray, sv: SideStats,
                           b_I: np.ndarray) -> np.ndarray:
    """The reconstruction's part of ``dL/dS``, ``C_Iᵀ dL/dU_I`` (float64, K × K): a sum over the batch's cells,
    so row chunks add their parts."""
    return gram(C_I, recon_grad(XV, matmul(C_I, S), sv, b_I, bs.coef))


def association_coupling_grad(problem: Problem, S: np.ndarray, other_S) -> np.ndarray:
    """The coupling's part of ``dL/dS`` (float64, K × K): ``−a3 d cos(S, S_other)/dS``.

    ``other_S``: one matrix, or a list of every other block's S in a mosaic, whose coupling
    ``−a3 / (B − 1) Σ_{s<t} cos(S_s, S_t)`` (:func:`association_coupling_value`) gives
    ``−a3 / (B − 1) Σ_t d cos(S, S_t)/dS``: the mean over the partners (B = 2 is the two-matrix term).
    """
    others = other_S if isinstance(other_S, list) else [other_S]
    if len(others) == 1:
        _, g, _ = cosine_and_grads(S, others[0])
        return -(problem.a3 / len(others)) * g
    # several partners at once: Σ_t d cos(S, S_t)/dS = (T − ⟨Ŝ, T⟩ Ŝ) / |S| with Ŝ = S/|S|, T = Σ_t Ŝ_t
    # (partners of norm 0 add nothing; the same as cosine_and_grads term by term, in O(B K²) array operations)
    norm = np.sqrt(frob(S, S))
    if norm <= 0.0:
        return np.zeros(S.shape)
    T, _ = _unit_sum(others)
    Sh = S.astype(np.float64) / norm
    g = (T - float(np.sum(Sh * T)) * Sh) / norm
    return -(problem.a3 / len(others)) * g


def _unit_sum(mats: list) -> tuple:
    """``Σ_t S_t / |S_t|`` over the matrices of nonzero norm (float64), and how many those are."""
    stack = np.asarray(mats, dtype=np.float64)
    norms = np.sqrt(np.einsum("tij,tij->t", stack, stack))
    keep = norms > 0
    return np.einsum("tij,t->ij", stack[keep], 1.0 / norms[keep]), int(keep.sum())


def association_coupling_value(S_list: list) -> float:
    """``Σ_{s<t} cos(S_s, S_t) / (B − 1)`` over the B blocks' association matrices (0 for one block):
    ``cos(S_atac, S_rna)`` for the two-matrix fit; weighted by ``−a3`` in the loss."""
    B = len(S_list)
    if B < 2:
        return 0.0
    if B == 2:
        return cosine_and_grads(S_list[0], S_list[1])[0]
    # Σ_{s<t} ⟨Ŝ_s, Ŝ_t⟩ = (|Σ Ŝ|² − Σ |Ŝ|²) / 2 over the matrices of nonzero norm
    T, n_unit = _unit_sum(S_list)
    return (float(np.sum(T * T)) - n_unit) / 2.0 / (B - 1)


def feature_grad(problem: Problem, name: str, params: dict, bs: BatchStats, XtU: np.ndarray, V_J: np.ndarray,
                 su: SideStats, c_J: np.ndarray) -> LogitGrad:
    """The gradient on the batch's feature memberships ``V_J`` of modality ``name``: reconstruction and coupling.

    ``XtU = X[I][:, J]ᵀ U_I``, ``su = side_stats(U_I, b_I)``. The feature coupling
    ``−a4 cos(C_genes, A C_regions)`` is computed at the current ``params`` over
    all features and taken on ``J`` (times ``feature_scale`` in a batch).
    """
    _, g_genes, g_regions = feature_coupling(problem, params["rna"].Cf, params["atac"].Cf)
    g = g_regions if name == "atac" else g_genes
    g = g if g.shape[0] == bs.cols.shape[0] else np.ascontiguousarray(g[bs.cols])
    gV = recon_grad(XtU, V_J, su, c_J, bs.coef)
    return LogitGrad(gV, extra=g, extra_coef=-problem.a4 * bs.feature_scale)


def cells_grad(problem, parts: list, C_I: np.ndarray) -> LogitGrad:
    """The gradient on one batch's cell memberships ``C_I`` when several blocks share them (a paired batch).

    ``parts``: per block of the batch ``(mod, bs, XV, S, sv, b_I)`` as for :func:`cell_grad`. The
    reconstruction terms add, each through its own S: ``dL/dC = Σ_k (dL/dU_k) S_kᵀ``; the mask and
    entropy terms are the batch's (once). One block: :func:`cell_grad` itself.
    """
    if len(parts) == 1:
        mod, bs, XV, S, sv, b_I = parts[0]
        return cell_grad(problem, mod, bs, XV, C_I, S, sv, b_I)
    G = None
    for mod, bs, XV, S, sv, b_I in parts:
        gC = recon_grad(XV, matmul(C_I, S), sv, b_I, bs.coef) @ S.T.astype(C_I.dtype)
        G = gC if G is None else G + gC
    mod, bs = parts[0][0], parts[0][1]
    n = bs.cells
    return LogitGrad(G, mask_cols=mod.masked_cols if problem.a5 else None, mask_coef=2.0 * problem.a5 / n,
                     ent_coef=problem.a6 / n)


def features_grad(problem, name: str, features: dict, parts: list, V_J: np.ndarray, c_J: np.ndarray) -> LogitGrad:
    """The gradient on modality ``name``'s feature memberships ``V_J`` when several blocks share them.

    ``parts``: per block of the modality ``(bs, XtU, su)`` as for :func:`feature_grad`; the
    reconstruction gradients add, the feature coupling enters once. One block: :func:`feature_grad`.
    """
    bs, XtU, su = parts[0]
    g = feature_grad(problem, name, features, bs, XtU, V_J, su, c_J)
    for bs, XtU, su in parts[1:]:
        g.G = g.G + recon_grad(XtU, V_J, su, c_J, bs.coef)
    return g


def cell_bias(mod: Modality, U: np.ndarray, sv: SideStats) -> np.ndarray:
    """The closed-form cell biases of one block, ``(X 1 − U (Vᵀ1) − (1ᵀc) 1) / p`` (:func:`closed_form_bias`)."""
    return closed_form_bias(mod.row_sums, U, sv, mod.p)


def _bias_weights(mods: list) -> list:
    """``ω_k = (w_k / Σw) / n_k`` of :func:`feature_bias` (equal shares when every weight is 0)."""
    total_w = sum(mod.weight for mod in mods)
    return [(mod.weight / total_w if total_w > 0 else 1.0 / len(mods)) / mod.n for mod in mods]


def weighted_col_sums(mods: list) -> np.ndarray:
    """``Σ_k ω_k X_kᵀ1`` over the blocks ``mods`` of one modality (:func:`feature_bias`): fixed during a fit."""
    out = np.zeros(mods[0].p, dtype=np.float64)
    for w, mod in zip(_bias_weights(mods), mods):
        out += w * mod.col_sums
    return out


def feature_bias(parts: list, Cf: np.ndarray, col_sums: np.ndarray = None) -> np.ndarray:
    """The closed-form feature biases of a modality shared by several blocks.

    ``parts``: per block ``(mod, su)`` with ``su = side_stats(U_k, b_k)``. Minimising
    ``Σ_k w_k / (n_k p) |X_k − U_k Vᵀ − b_k 1ᵀ − 1 cᵀ|²`` over ``c`` gives
    ``c = Σ_k (w_k / n_k) (X_kᵀ1 − V (U_kᵀ1) − (1ᵀb_k) 1) / Σ_k w_k``; one block: :func:`closed_form_bias`.
    ``col_sums``: :func:`weighted_col_sums` of the parts' blocks when the caller keeps it (it does not change).
    """
    if len(parts) == 1:
        mod, su = parts[0]
        return closed_form_bias(mod.col_sums, Cf, su, mod.n)
    mods = [mod for mod, _ in parts]
    sums = weighted_col_sums(mods) if col_sums is None else col_sums
    ones = np.zeros(Cf.shape[1], dtype=np.float64)
    shift = 0.0
    for w, (mod, su) in zip(_bias_weights(mods), parts):  # Σ_k ω_k U_kᵀ1 and Σ_k ω_k 1ᵀb_k: one V product
        ones += w * su.ones
        shift += w * su.bias_sum
    return (sums - np.dot(Cf.astype(np.float64), ones) - shift).astype(Cf.dtype)


def refit_features_first(mosaic: Mosaic, mp: MosaicParams, m: str, col_sums: np.ndarray = None) -> None:
    """Modality ``m``'s feature biases over every block's cells (:func:`feature_bias`), then each block's cell
    biases given them (:func:`cell_bias`), in place; ``col_sums`` as for :func:`feature_bias`."""
    blocks = mosaic.blocks_of_modality(m)
    feat = mp.features[m]
    U = {b.name: cell_factor(mp.cells[b.batch].C, mp.blocks[b.name].S) for b in blocks}
    feat.c[:] = feature_bias([(b.data, side_stats(U[b.name], mp.blocks[b.name].b)) for b in blocks], feat.Cf,
                             col_sums)
    sv = side_stats(feat.Cf, feat.c)
    for b in blocks:
        mp.blocks[b.name].b[:] = cell_bias(b.data, U[b.name], sv)


#: placeholders for the optional arguments of ``logit_step_rows``
_NO_MATRIX = np.zeros((1, 1))
_NO_COLUMNS = np.zeros(0, dtype=np.int64)

#: ``mode`` of ``kernels.logit_step_rows``
GD, ADAM, GRADIENT = 0, 1, 2


def run_logit_kernel(g: LogitGrad, C: np.ndarray, Z: np.ndarray, Mom: np.ndarray, Var: np.ndarray,
                     rows: np.ndarray, mode: int, lr: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
                     eps: float = 1e-8, step: int = 1, simplex: bool = True) -> np.ndarray:
    """Run ``kernels.logit_step_rows`` on the pieces of ``g`` (see :class:`LogitGrad`); returns its ``out``.

    ``mode``: :data:`GD` or :data:`ADAM` step the logit rows ``Z[rows]`` in place and return the new
    memberships; :data:`GRADIENT` returns ``dL/dZ`` of the rows and changes nothing. With
    ``simplex=False``, ``Z`` is a plain parameter block (S; ``C`` is not read) stepped down ``g.G``,
    and the new rows are returned.
    """
    dt = Z.dtype
    out = np.empty((rows.size, Z.shape[1]), dtype=dt)
    G = np.ascontiguousarray(g.G, dtype=dt)
    kn.logit_step_rows(
        G, np.ascontiguousarray(g.M if g.M is not None else _NO_MATRIX, dtype=dt), g.M is not None,
        G if g.extra is None else np.ascontiguousarray(g.extra, dtype=dt), float(g.extra_coef),
        np.ascontiguousarray(C, dtype=dt), _NO_COLUMNS if g.mask_cols is None else g.mask_cols, float(g.mask_coef),
        float(g.ent_coef), Z, Mom, Var, rows, lr, beta1, beta2, eps, step, mode, simplex, out)
    return out


def logit_gradient(g: LogitGrad, C: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``dL/dZ`` for all rows of ``Z`` (``C = softmax(Z)``) from the pieces ``g``, by the fit's own kernel."""
    rows = np.arange(Z.shape[0], dtype=np.int64)
    return run_logit_kernel(g, C, Z, Z, Z, rows, GRADIENT)


# --------------------------------------------------------------------------- whole objective


def evaluate(problem: Problem, params: dict, with_grad: bool = True):
    """Every term of the objective on full batches and, if asked, the gradient of ``L`` for every block.

    The two-matrix fit seen as a mosaic (:func:`evaluate_mosaic`).

    Returns
    -------
    terms : dict
        ``recon_atac`` and ``recon_rna`` (weighted by a1, a2), ``cos_S``, ``cos_features``,
        ``mask``, ``entropy`` (unweighted) and ``total``.
    grads : dict or None
        ``Z_atac, Z_rna, Z_regions, Z_genes`` (with respect to the logits),
        ``S_atac, S_rna``.
    """
    terms, grads = evaluate_mosaic(problem.as_mosaic(), MosaicParams.of_factors(params), with_grad)
    if grads is not None:
        grads["Z_regions"], grads["Z_genes"] = grads.pop("Zf_atac"), grads.pop("Zf_rna")
    return terms, grads


def evaluate_mosaic(mosaic: Mosaic, mp: MosaicParams, with_grad: bool = True):
    """Every term of a mosaic's objective on full batches and, if asked, the gradient of ``L`` for every block.

    The gradients come from the per-block functions the fit's steps call
    (:func:`cells_grad`, :func:`association_grad`, :func:`features_grad`) and the
    fit's fused kernel (:func:`logit_gradient`).

    Returns
    -------
    terms : dict
        As :func:`mosaic_terms`.
    grads : dict or None
        ``Z_<batch>`` and ``Zf_<modality>`` (with respect to the logits), ``S_<block>``.
    """
    recon, parts = {}, {}
    for blk in mosaic.blocks:
        mod, cells, feat, bf = blk.data, mp.cells[blk.batch], mp.features[blk.modality], mp.blocks[blk.name]
        bs = batch_stats(mod, Batch.whole(mod.n, mod.p))
        U = matmul(cells.C, bf.S)
        su, sv = side_stats(U, bf.b), side_stats(feat.Cf, feat.c)
        XV = spmm(mod.X, bs.rows, np.ones(mod.p, np.uint8), feat.Cf)
        recon[blk.name] = recon_term(mod, bs, frob(U, XV), U, su, feat.Cf, sv, bf.b, feat.c)
        if with_grad:
            XtU = spmm_t(mod.X, mod.Xt, bs.rows, np.ones(mod.n, np.uint8), bs.cols, np.ones(mod.p, np.uint8), U)
            parts[blk.name] = (mod, bs, XV, XtU, su, sv)
    terms = mosaic_terms(mosaic, mp, recon)
    if not with_grad:
        return terms, None
    grads = {}
    for batch in mosaic.batches:
        cells = mp.cells[batch]
        cell_parts = [parts[b.name][:3] + (mp.blocks[b.name].S, parts[b.name][5], mp.blocks[b.name].b)
                      for b in mosaic.blocks_of_batch(batch)]
        grads["Z_" + batch] = logit_gradient(cells_grad(mosaic, cell_parts, cells.C), cells.C, cells.Z)
    for blk in mosaic.blocks:
        mod, bs, XV, _, _, sv = parts[blk.name]
        bf, others = mp.blocks[blk.name], [mp.blocks[o.name].S for o in mosaic.blocks if o.name != blk.name]
        grads["S_" + blk.name] = association_grad(mosaic, bs, XV, mp.cells[blk.batch].C, bf.S, sv, bf.b, others)
    for m in mosaic.modalities():
        feat = mp.features[m]
        feat_parts = [(parts[b.name][1], parts[b.name][3], parts[b.name][4]) for b in mosaic.blocks_of_modality(m)]
        grads["Zf_" + m] = logit_gradient(features_grad(mosaic, m, mp.features, feat_parts, feat.Cf, feat.c),
                                          feat.Cf, feat.Zf)
    return terms, grads

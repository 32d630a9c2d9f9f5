"""What one task does to one row chunk of a modality: the chunk's share of an epoch (the Dask fit).

The cells of a modality are split into row chunks (the Dask array's chunks);
each chunk keeps its own cell state (:class:`ChunkState`: logits, memberships,
their Adam moments and the cell biases) where it is computed, and every
function here takes one chunk's prepared data (raw CSR arrays), its state and
the small values the client broadcasts (feature memberships, S, side stats),
and returns a *new* state and the chunk's *partial sums*: every quantity the
client needs from the cells is a sum over rows (``Cᵀ dL/dU``, Gram products,
``Xᵀ U``, ``⟨b, X1⟩``, the mask and entropy sums), so the client adds the
chunks' parts and goes on as the in-memory epoch does.

No function modifies the state it is given (a task may run again after a
worker is lost, and the fit keeps the previous state to undo an epoch). All
arithmetic of the model comes from :mod:`fastjmt.objective`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from . import objective as obj
from . import preprocess as pp
from .errors import NonFiniteError
from .problem import Modality, Problem, softmax
from .products import spmm, spmm_all, spmm_t, spmm_t_full
from .transform import nearest_start


@dataclass(frozen=True)
class ChunkState:
    """One row chunk's cells: everything of the fit that has one row per cell."""

    Z: np.ndarray  # rows × K logits
    C: np.ndarray  # rows × K memberships, softmax(Z)
    Mom: np.ndarray  # Adam's first moments of Z
    Var: np.ndarray  # Adam's second moments of Z
    b: np.ndarray  # cell biases
    labels: np.ndarray  # int32 argmax of C at the last check of the stopping rule
    row_sums: np.ndarray  # float64 X 1 of the prepared data
    empty: np.ndarray  # bool: rows without data


@dataclass(frozen=True)
class Hyper:
    """The scalars a chunk task needs: the problem's weights, the sizes of the whole modality, the step."""

    weight: float
    a5: float
    a6: float
    n: int  # cells of the whole modality
    p: int  # features
    masked_cols: np.ndarray
    lr: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step: int = 1
    adam: bool = True
    rows: tuple = ()  # rows of every chunk of the modality, in order
    batch_cells: int = 0  # |I| of a mini-batch (0: every cell)
    batch_features: int = 0  # |J| of a mini-batch (0: every feature)

    @property
    def cells(self) -> int:
        """The cells the per-cell means divide by: ``|I|`` (objective.BatchStats)."""
        return self.batch_cells or self.n

    @property
    def coef(self) -> float:
        """The reconstruction gradient's coefficient ``2 w / (|I| |J|)`` (objective.BatchStats)."""
        return obj.recon_coef(self.weight, self.cells, self.batch_features or self.p)


ALLOWED_CHUNKS = "scipy.sparse CSR matrices (csr_matrix / csr_array) or dense NumPy arrays"


def check_block(block, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` for a chunk that is neither CSR nor a dense NumPy array."""
    if sp.issparse(block):
        if block.format != "csr":
            raise TypeError(f"{name}: a chunk is scipy.sparse {block.format.upper()}; the Dask fit takes row chunks "
                            f"of {ALLOWED_CHUNKS}: convert with {name}.map_blocks(lambda b: b.tocsr())")
    elif not isinstance(block, np.ndarray):
        raise TypeError(f"{name}: a chunk is {type(block).__name__}; the Dask fit takes row chunks of "
                        f"{ALLOWED_CHUNKS}")


def raw_stats(block, name: str) -> dict:
    """Per-row numbers of a raw chunk the preprocessing constants come from: library sizes and row maxima
    (:func:`fastjmt.preprocess.rna_constants`), and which rows are empty."""
    check_block(block, name)
    M = pp.to_csr(block, dtype=np.float64, name=name)
    lib, row_max = pp.library_and_row_max(M)
    return {"lib": lib, "row_max": row_max, "negative": bool(M.nnz and M.data.min() < 0),
            "finite": bool(np.isfinite(M.data).all()), "nnz": int(M.nnz)}


def prepare(block, name: str, dtype, preprocess: bool, constants: dict) -> tuple:
    """A raw chunk as the fit sees it: canonical CSR of ``dtype``, preprocessed with the whole modality's
    constants (RNA: :func:`fastjmt.preprocess.preprocess_rna`; ATAC: binarised), as raw CSR arrays."""
    check_block(block, name)
    M = pp.to_csr(block, dtype=dtype, name=name)
    if preprocess:
        if name == "rna":
            M = pp.preprocess_rna(M, copy=False, target_sum=constants["target_sum"],
                                  max_value=constants["max_value"])
        else:
            M = pp.preprocess_atac(M, copy=False)
    return (M.indptr, M.indices, M.data, M.shape[1])


def _modality(data: tuple, h: Hyper, row_sums) -> Modality:
    indptr, indices, values, p = data
    return Modality((indptr, indices, values), None, indptr.size - 1, p, row_sums, None, 0.0, h.weight,
                    h.masked_cols)


def prepared_stats(data: tuple) -> dict:
    """Column sums, squared norm, row sums and empty rows of a prepared chunk (all sums over its rows)."""
    indptr, indices, values, p = data
    rs, sq = pp.row_sums(indptr, values)
    col = spmm_t_full((indptr, indices, values), None, p, np.ones((indptr.size - 1, 1)))[:, 0]
    return {"col_sums": col, "sq_norm": float(sq.sum()), "row_sums": rs, "empty": np.diff(indptr) == 0,
            "n": indptr.size - 1, "nnz": int(indptr[-1] - indptr[0])}


def prepared_sums(data: tuple) -> dict:
    """The whole modality's sums a prepared chunk contributes to (column sums, squared norm, rows, nonzeros);
    nothing with one entry per cell, so the client gathers O(features) per chunk."""
    st = prepared_stats(data)
    return {k: st[k] for k in ("col_sums", "sq_norm", "n", "nnz")}


def select_rows(data: tuple, rows: np.ndarray) -> sp.csr_matrix:
    """The rows ``rows`` (chunk-local) of a prepared chunk as a CSR matrix (the start's sample)."""
    indptr, indices, values, p = data
    return sp.csr_matrix((values, indices, indptr), shape=(indptr.size - 1, p))[rows]


def start(data: tuple, h: Hyper, sample_rows: np.ndarray, sample_Z: np.ndarray, centroids, Cf, c, S,
          dtype) -> ChunkState:
    """A chunk's starting state: the start's logits for its rows in the start's sample (``sample_rows``,
    ``sample_Z``); every other row the logits of the nearest column centroid of program activities
    (``centroids``: :func:`fastjmt.transform.start_centroids`, the start of new cells mapped onto a fit);
    biases in closed form."""
    stats = prepared_stats(data)
    n, K = stats["n"], Cf.shape[1]
    Z = np.zeros((n, K), dtype=dtype)
    if sample_rows.size < n:
        Z[:] = nearest_start(obj.program_activity(_modality(data, h, stats["row_sums"]), Cf), centroids, dtype)
    Z[sample_rows] = sample_Z
    C = softmax(Z)
    b = obj.closed_form_bias(stats["row_sums"], obj.cell_factor(C, S), obj.side_stats(Cf, c), h.p)
    return ChunkState(Z, C, np.zeros_like(Z), np.zeros_like(Z), b, np.argmax(C, axis=1).astype(np.int32),
                      stats["row_sums"], stats["empty"])


def given_start(data: tuple, Z: np.ndarray, b: np.ndarray) -> ChunkState:
    """A chunk's starting state from logits and biases computed for exactly its rows (the start saw them all)."""
    stats = prepared_stats(data)
    C = softmax(Z)
    return ChunkState(Z, C, np.zeros_like(Z), np.zeros_like(Z), b, np.argmax(C, axis=1).astype(np.int32),
                      stats["row_sums"], stats["empty"])


def evaluate(data: tuple, st: ChunkState, h: Hyper, Cf, S) -> tuple:
    """The chunk's parts of the loss at the current point (one pass over its nonzeros); the state unchanged."""
    U = obj.cell_factor(st.C, S)
    XV = spmm_all(data[:3], data[3], Cf)
    parts = _cell_parts(st, h, U)
    parts["bilinear"] = obj.frob(U, XV)
    return st, parts


def _cell_parts(st: ChunkState, h: Hyper, U) -> dict:
    return {"su": obj.side_stats(U, st.b), "b_dot_rows": obj.bias_dot(st.b, st.row_sums),
            "mask": obj.mask_sum(st.C, h.masked_cols), "entropy": obj.entropy_sum(st.C)}


def cell_step(data: tuple, st: ChunkState, h: Hyper, Cf, sv: obj.SideStats, S, col_mask=None) -> tuple:
    """The cell step of an epoch on one chunk (:func:`fastjmt.driver._cell_and_S_step`'s first half):
    ``X V`` (over a mini-batch's features ``col_mask`` when given), the gradient on the memberships, the fused
    Adam step; returns the new state and the chunk's part of the reconstruction's ``dL/dS`` at the new
    memberships."""
    n = data[0].size - 1
    rows = np.arange(n, dtype=np.int64)
    XV = spmm_all(data[:3], data[3], Cf) if col_mask is None else spmm(data[:3], rows, col_mask, Cf)
    bs = obj.BatchStats(rows, None, st.row_sums, None, 0.0, h.coef, 1.0, n_cells=h.cells)
    problem = Problem(None, None, None, None, 0, 0, Cf.shape[1], 0.0, 0.0, h.a5, h.a6, Cf.dtype)
    mod = _modality(data, h, st.row_sums)
    g = obj.cell_grad(problem, mod, bs, XV, st.C, S, sv, st.b)
    Z, Mom, Var = st.Z.copy(), st.Mom.copy(), st.Var.copy()
    C = obj.run_logit_kernel(g, st.C, Z, Mom, Var, rows, obj.ADAM if h.adam else obj.GD, h.lr, h.beta1, h.beta2,
                             h.eps, h.step, True)
    if not np.isfinite(C).all():
        raise NonFiniteError("non-finite cell memberships in a row chunk; lower learning_rate, use dtype=float64, "
                             "or check the input for extreme values")
    return replace(st, Z=Z, C=C, Mom=Mom, Var=Var), obj.association_recon_grad(bs, XV, C, S, sv, st.b)


def cell_biases(data: tuple, st: ChunkState, h: Hyper, S, sv: obj.SideStats) -> tuple:
    """After the S step: the cell biases in closed form given the features' side stats ``sv``
    (:func:`fastjmt.objective.refit_biases`, cells first), and the chunk's parts of ``side_stats(C S, b)`` and
    of ``Xᵀ (C S)`` (the feature step's product, one pass over the chunk's nonzeros)."""
    U = obj.cell_factor(st.C, S)
    b = obj.closed_form_bias(st.row_sums, U, sv, h.p)
    return replace(st, b=b), {"su": obj.side_stats(U, b), "XtU": spmm_t_full(data[:3], None, data[3], U)}


def batch_features(data: tuple, st: ChunkState, h: Hyper, S, cols, col_mask) -> tuple:
    """A mini-batch's feature-step product on one chunk of its cells: the chunk's parts of ``X[:, J]ᵀ (C S)``
    (``len(cols)`` × K) and of ``side_stats(C S, b)``; the state unchanged."""
    n = data[0].size - 1
    U = obj.cell_factor(st.C, S)
    XtU = spmm_t(data[:3], None, np.arange(n, dtype=np.int64), np.ones(n, np.uint8), cols, col_mask, U)
    return st, {"su": obj.side_stats(U, st.b), "XtU": XtU}


def refit_after_features(st: ChunkState, h: Hyper, S, sv: obj.SideStats) -> tuple:
    """After the feature step: the cell biases in closed form given the new ``sv``, and the chunk's parts of
    the loss (side stats, ``⟨b, X1⟩``, mask and entropy sums). No pass over the data."""
    U = obj.cell_factor(st.C, S)
    b = obj.closed_form_bias(st.row_sums, U, sv, h.p)
    new = replace(st, b=b)
    return new, _cell_parts(new, h, U)


def relabel(st: ChunkState) -> tuple:
    """The chunk's argmax labels now, and how many changed since the last check (the stopping rule)."""
    now = np.argmax(st.C, axis=1).astype(np.int32)
    return replace(st, labels=now), int(np.count_nonzero(now != st.labels))


def outputs(data: tuple, st: ChunkState, h: Hyper, Cf) -> dict:
    """The chunk's rows of the result: memberships (uniform for rows without data), program activities,
    cell biases, the empty rows."""
    mod = _modality(data, h, st.row_sums)
    C = st.C
    if st.empty.any():
        C = C.copy()
        C[st.empty] = 1.0 / C.shape[1]
    return {"C": C, "programs": obj.program_activity(mod, Cf), "b": st.b, "empty": st.empty}


def save_state(st: ChunkState, path: str) -> str:
    """Write a chunk's state to ``path`` (``.npz``, no pickle; written to a temporary name, then renamed)."""
    tmp = path[:-4] + ".tmp.npz"
    np.savez(tmp, **{name: getattr(st, name) for name in ChunkState.__dataclass_fields__})
    os.replace(tmp, path)
    return path


def load_state(path: str) -> ChunkState:
    """A chunk's state back from :func:`save_state`'s file."""
    with np.load(path, allow_pickle=False) as z:
        return ChunkState(**{name: z[name] for name in ChunkState.__dataclass_fields__})


def sum_parts(parts: list):
    """The sum of partial sums (arrays, floats, :class:`SideStats`, or dicts of them), in the given order."""
    parts = list(parts)
    first = parts[0]
    if isinstance(first, dict):
        return {k: sum_parts([p[k] for p in parts]) for k in first}
    total = first
    for p in parts[1:]:
        total = total + p
    return total

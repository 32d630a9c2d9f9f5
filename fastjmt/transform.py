"""New cells mapped onto a fitted model (fold-in): only the new cells' memberships and biases are fitted.

The feature memberships ``C_genes`` / ``C_regions``, the associations ``S``
and the feature biases of the fitted model stay fixed; each new cell gets
memberships that minimise its modality's terms of the objective given them
(reconstruction, mask, entropy; the couplings do not involve cells), by the
same per-block gradient (:func:`fastjmt.objective.cell_grad`) and the same
kernel as the fit. With the features fixed, ``X V`` is computed once, so the
cost is one pass over the new cells' nonzeros plus O(new cells · K²) per
iteration: it grows with the new cells only (implicit's ``recalculate_user``
and LIGER's online iNMF do the same for their models).

Start (a nearest-centroid guess): each new cell's program activities
(``X V / X 1``, as ``JMTResult.programs_*``) go to the nearest centroid of the
training cells' program activities per column (standardised per program), over
the columns its modality may use; its logits start at the log of the mean
training membership of that column.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import objective as obj
from . import preprocess as pp
from .problem import WEIGHT_OF, Batch, Problem, masked_columns, modality, softmax
from .products import spmm_all
from .validation import check_count, check_matrix, check_positive

#: iterations at most, and the stopping check: every ``WINDOW`` iterations, stop when at most ``LABEL_TOL`` of
#: the new cells changed their column (the fit's ``stop="answer"`` defaults) and no membership moved by more
#: than ``C_TOL``
MAX_ITER, WINDOW, LABEL_TOL, C_TOL = 100, 5, 1e-3, 1e-2


def _prepare(X, name: str, model: dict, n_features: int) -> sp.csr_matrix:
    """New cells' matrix checked, copied to CSR of the model's dtype and preprocessed as the training cells."""
    shape = check_matrix(X, name, allow_negative=not model["preprocess"], require_nonzero=False)
    if shape[1] != n_features:
        raise ValueError(f"{name} has {shape[1]} features but the model was fitted on {n_features}; pass the "
                         "new cells over the training features, in the same order")
    M = pp.to_csr(X, dtype=np.dtype(model["dtype"]), name=name)
    if not model["preprocess"]:
        return M
    if name == "rna":
        return pp.preprocess_rna(M, copy=False, target_sum=model["rna_target_sum"],
                                 max_value=model["rna_max_value"])
    return pp.preprocess_atac(M, copy=False)


def start_centroids(train_programs, train_C, allowed) -> tuple:
    """The nearest-centroid start's model: ``(mu, sd, centres, logits)`` — the training cells' program
    activities standardised per program (``mu``, ``sd``), each allowed column's centroid of them, and the log of
    that column's mean training membership (a one-hot guess for a column no training cell took)."""
    train_columns = np.argmax(train_C, axis=1)
    mu = train_programs.mean(axis=0).astype(np.float64)
    sd = train_programs.std(axis=0).astype(np.float64)
    sd = np.where(sd > 0, sd, 1.0)
    T = (train_programs.astype(np.float64) - mu) / sd
    cols = [k for k in allowed if np.any(train_columns == k)] or list(allowed)
    K = train_C.shape[1]
    centroids, memberships = [], []
    for k in cols:
        members = train_columns == k
        if members.any():
            centroids.append(T[members].mean(axis=0))
            memberships.append(train_C[members].astype(np.float64).mean(axis=0))
        else:  # a column no training cell took: a one-hot guess
            centroids.append(np.zeros(T.shape[1]))
            memberships.append(np.eye(K)[k] * 0.9 + 0.1 / K)
    return mu, sd, np.stack(centroids), np.log(np.maximum(np.stack(memberships), 1e-12))


def nearest_start(programs, model: tuple, dtype) -> np.ndarray:
    """Each cell's starting logits: those of the column whose centroid (:func:`start_centroids`) is nearest
    to the cell's standardised program activities."""
    mu, sd, centroids, logits = model
    P = (programs.astype(np.float64) - mu) / sd
    d2 = (P**2).sum(1)[:, None] - 2 * P @ centroids.T + (centroids**2).sum(1)[None, :]
    return np.ascontiguousarray(logits[np.argmin(d2, axis=1)], dtype=dtype)


def _start_logits(programs, train_programs, train_C, allowed, dtype):
    """Each new cell's starting logits: the log of the mean training membership of the training column whose
    centroid of standardised program activities is nearest to the cell's (over the allowed columns)."""
    return nearest_start(programs, start_centroids(train_programs, train_C, allowed), dtype)


def map_cells(result, rna=None, atac=None, *, max_iter: int = MAX_ITER) -> dict:
    """Memberships of new cells on a fitted model, its features, associations and feature biases fixed.

    Parameters
    ----------
    result : JMTResult
        A fit (:func:`fastjmt.fit`) or a loaded one (:func:`fastjmt.load_result`); it must carry
        ``result.model`` (fits since 2026-11-29 do).
    rna : sparse matrix or array-like, shape (n_new_rna, n_genes), optional
        New RNA cells over the training genes, in the same order, raw counts
        as for the fit (they are preprocessed with the training cells'
        constants). Never modified.
    atac : sparse matrix or array-like, shape (n_new_atac, n_regions), optional
        New ATAC cells over the training regions.
    max_iter : int
        Iterations at most; the mapping stops earlier when at most 0.1 % of the
        new cells changed column over 5 iterations.

    Returns
    -------
    dict
        For each modality given (``"rna"``, ``"atac"``): a dict with ``C``
        (n_new × K memberships, the model's dtype; uniform rows for cells
        without counts), ``columns`` (argmax), ``labels`` (columns mapped
        through the model's ``column_clusters``; both −1 for cells without
        counts: no call), ``empty`` (bool per cell: no counts), ``programs``
        (n_new × K program activities, as ``JMTResult.programs_*``), ``b``
        (cell biases) and ``n_iter``.

    Raises
    ------
    ValueError
        Neither modality given, the feature count differs from the model's,
        invalid values, or a result without ``model``.
    """
    if rna is None and atac is None:
        raise ValueError("map_cells: pass rna=, atac= or both (the new cells)")
    model = getattr(result, "model", None)
    if not model:
        raise ValueError("this result has no 'model' (fitted before 2026-11-29): refit to map new cells onto it")
    max_iter = check_count(max_iter, "max_iter", 1)
    check_positive(model["init_scale"], "init_scale", allow_zero=True)
    K = result.K
    masked = masked_columns(result.n_shared, result.n_rna_only, result.n_atac_only)
    problem = Problem(None, None, None, None, 0, 0, K, model["a3"], model["a4"], model["a5"], model["a6"],
                      np.dtype(model["dtype"]))
    given = {"rna": rna, "atac": atac}
    out = {}
    for name in ("rna", "atac"):
        if given[name] is None:
            continue
        Cf = result.C_genes if name == "rna" else result.C_regions
        c = result.b_genes if name == "rna" else result.b_regions
        S = result.S_rna if name == "rna" else result.S_atac
        X = _prepare(given[name], name, model, Cf.shape[0])
        out[name] = _map(problem, X, name, masked[name], Cf, c, S, model, result, max_iter)
    return out


def _map(problem, X, name, masked_cols, Cf, c, S, model, result, max_iter):
    dt = problem.dtype
    K = problem.K
    Cf, c, S = (np.ascontiguousarray(a, dtype=dt) for a in (Cf, c, S))
    weight = model[WEIGHT_OF[name]]
    mod = modality(X, weight, masked_cols, low_memory=True)
    n, p = mod.n, mod.p
    empty = np.diff(X.indptr) == 0
    XV = spmm_all(mod.X, p, Cf)  # the features are fixed: X V once
    programs = obj.program_activity(mod, Cf, XV)
    train_P = result.programs_rna if name == "rna" else result.programs_atac
    train_C = result.C_rna if name == "rna" else result.C_atac
    train_empty = result.empty_rna if name == "rna" else result.empty_atac
    keep = ~train_empty if train_empty is not None else np.ones(train_C.shape[0], bool)
    allowed = np.setdiff1d(np.arange(K), masked_cols)
    Z = _start_logits(programs, train_P[keep], train_C[keep], allowed, dt)
    C = softmax(Z)
    sv = obj.side_stats(Cf, c)
    bs = obj.batch_stats(mod, Batch.whole(n, p))
    b = obj.closed_form_bias(mod.row_sums, obj.matmul(C, S), sv, p)
    Mom, Var = np.zeros_like(Z), np.zeros_like(Z)
    rows = np.arange(n, dtype=np.int64)
    before, C_before, it = np.argmax(C, axis=1), C.copy(), 0
    for it in range(1, max_iter + 1):
        g = obj.cell_grad(problem, mod, bs, XV, C, S, sv, b)
        C = obj.run_logit_kernel(g, C, Z, Mom, Var, rows, obj.ADAM, model["learning_rate"], step=it)
        b = obj.closed_form_bias(mod.row_sums, obj.matmul(C, S), sv, p)
        if not np.isfinite(C).all():
            raise FloatingPointError(f"non-finite memberships while mapping new {name} cells at iteration {it}")
        if it % WINDOW == 0:
            now = np.argmax(C, axis=1)
            changed = float(np.mean(now != before)) if n else 0.0
            moved = float(np.abs(C - C_before).max()) if n else 0.0
            before, C_before = now, C.copy()
            if changed <= LABEL_TOL and moved <= C_TOL:
                break
    if empty.any():
        C[empty] = 1.0 / K
    columns = np.argmax(C, axis=1)
    labels = columns.copy() if result.column_clusters is None else np.asarray(result.column_clusters)[columns]
    columns[empty], labels[empty] = -1, -1  # no data, no call
    return {"C": C, "columns": columns, "labels": labels, "programs": programs, "b": b, "n_iter": it, "empty": empty}

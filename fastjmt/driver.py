"""The fitting loop: block schedule, mini-batches, restarts, convergence, RNG and threads.

Plain Python and no arithmetic of the model: every gradient, coefficient,
closed form and loss term comes from :mod:`fastjmt.objective`, every product
of the data from :mod:`fastjmt.products`.

One epoch visits the blocks in this order, each with the others fixed::

    for each modality (ATAC, then RNA):
        cell logits Z      (gradient step; uses X V)
        association S      (gradient step; reuses X V, V has not moved)
        biases b, c        (closed form)
    for each modality (ATAC, then RNA):
        feature logits Zf  (gradient step; uses Xᵀ U)
        biases c, b        (closed form)

so one epoch costs two passes over each modality's nonzeros, and the loss at
the end of a full-batch epoch is read off the last product for free.

Backtracking (``Schedule.backtrack``, the default): the factors and optimiser
state are copied before each epoch (O((cells + features) · K)); an epoch that
raises the loss is undone from that copy and the step halved, and each kept
epoch regrows the step by 5 % up to ``learning_rate``. The loss history is
non-increasing, and a step below ``min_step · learning_rate`` counts as converged.

Stopping (``Schedule.stop``): ``"answer"`` (the default) takes a
:class:`Snapshot` of the answer (argmax labels of cells and features, S, the
loss) every ``window`` kept epochs and stops when, since the previous one, at
most ``label_tol`` of the cells / genes / regions changed their argmax, S moved
by at most ``S_tol`` and the loss by at most ``tol`` per epoch. At a check
where no cell moved and the loss changed by at most ``10 · tol`` per epoch but
the answer has not settled, the step ceiling ``lr_max`` is multiplied by
``step_decay``: Adam moves every logit by about the step whatever its
gradient, so only a smaller step ends the jitter of the features and S.
``"loss"``: the relative loss change stays below ``tol`` for ``patience``
epochs in a row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from . import objective as obj
from .errors import CheckpointError, NonFiniteError
from .objective import TERMS, LogitGrad
from .options import DEFAULT_TOL, DEFAULTS
from .problem import MODALITIES, Batch, Block, Factors, Mosaic, MosaicParams, Problem
from .products import spmm, spmm_t
from .initialize import initialize
from .progress import Progress

logger = logging.getLogger("fastjmt")


@dataclass
class Schedule:
    """Optimiser settings of one fit (see :func:`fastjmt.fit` for their meaning; defaults from
    :data:`fastjmt.options.DEFAULTS`, the step-size mechanics' own below them)."""

    max_iter: int = DEFAULTS.max_iter
    tol: float = DEFAULT_TOL["loss"]  # the fit resolves tol by its stop rule; the loss rule's here
    patience: int = DEFAULTS.patience
    stop: str = DEFAULTS.stop
    window: int = DEFAULTS.window
    label_tol: float = DEFAULTS.label_tol
    S_tol: float = DEFAULTS.S_tol
    step_decay: float = DEFAULTS.step_decay
    optimizer: str = DEFAULTS.optimizer
    learning_rate: float = DEFAULTS.learning_rate
    backtrack: bool = DEFAULTS.backtrack
    step_shrink: float = 0.5
    step_regrow: float = 1.05
    min_step: float = 1e-6
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    batch_cells: float = DEFAULTS.batch_cells
    batch_features: float = DEFAULTS.batch_features
    init: str = DEFAULTS.init
    init_scale: float = DEFAULTS.init_scale
    verbose: int = DEFAULTS.verbose
    log_every: int = 10
    callback: object = DEFAULTS.callback


def schedule_of(opts) -> Schedule:
    """The :class:`Schedule` of a fit's checked options (:class:`fastjmt.options.FitOptions`)."""
    return Schedule(
        max_iter=opts.max_iter, tol=opts.tol, patience=opts.patience, stop=opts.stop, window=opts.window,
        label_tol=opts.label_tol, S_tol=opts.S_tol, step_decay=opts.step_decay, optimizer=opts.optimizer,
        learning_rate=opts.learning_rate, backtrack=opts.backtrack, batch_cells=opts.batch_cells,
        batch_features=opts.batch_features, init=opts.init, init_scale=opts.init_scale, verbose=int(opts.verbose),
        callback=opts.callback,
    )


@dataclass
class RunOutcome:
    """What one restart produced."""

    params: dict
    history: np.ndarray  # n_iter × (len(TERMS) + 1): each term, then the total
    n_iter: int
    converged: bool
    seed: int
    stopped_by_callback: bool = False
    seconds: float = 0.0
    undone: int = 0  # epochs undone by backtracking (counted in n_iter)
    stop_reason: str = ""
    change: tuple = ()  # (label share, S change, loss change per epoch) at the last check of the answer
    chunks: dict = None  # the Dask fit's row-chunk states (RunState.chunks)


class _Stepper:
    """Applies one update to a block of parameters (Adam or plain gradient descent)."""

    def __init__(self, sched: Schedule, params):
        self.s = sched
        self.lr = sched.learning_rate  # the current step size (see ``_backtrack``)
        self.lr_max = sched.learning_rate  # the ceiling backtracking regrows it to (lowered by ``step_decay``)
        self.state = {}
        self.steps = {}
        mp = params if isinstance(params, MosaicParams) else MosaicParams.of_factors(params)  # or two-matrix
        for key, arr in mp.arrays().items():
            if sched.optimizer == "adam":
                self.state[key] = (np.zeros_like(arr), np.zeros_like(arr))
            self.steps[key] = 0

    def __call__(self, key: str, P: np.ndarray, G: np.ndarray, rows: np.ndarray):
        """A step on the rows ``rows`` of a plain parameter block ``P`` (the association matrices) down ``G``
        (one row per entry of ``rows``)."""
        self._step(key, LogitGrad(G), P, P, rows, simplex=False)

    def logits(self, key: str, Z: np.ndarray, rows: np.ndarray, C: np.ndarray, grad: LogitGrad) -> np.ndarray:
        """One fused step on the logit rows ``rows`` of ``Z`` (memberships ``C``) down the gradient ``grad``;
        returns their new memberships."""
        return self._step(key, grad, C, Z, rows, simplex=True)

    def _step(self, key, grad, C, Z, rows, simplex):
        # the one optimiser of a fit, for every block: kernels.logit_step_rows (objective.run_logit_kernel)
        self.steps[key] += 1
        adam = self.s.optimizer == "adam"
        Mom, Var = self.state[key] if adam else (Z, Z)
        return obj.run_logit_kernel(grad, C, Z, Mom, Var, rows, obj.ADAM if adam else obj.GD, self.lr,
                                    self.s.beta1, self.s.beta2, self.s.eps, self.steps[key], simplex)


def _check_finite(arr: np.ndarray, block: str, it: int):
    if not np.isfinite(arr).all():
        raise NonFiniteError(
            f"non-finite values in block {block} at iteration {it}; lower learning_rate, "
            "use dtype=float64, or check the input for extreme values"
        )


def draw(total: int, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A mini-batch's share ``frac`` of ``total`` items (rows, features or row chunks), sorted; all of them, with
    no draw from ``rng``, when ``frac >= 1``."""
    if frac >= 1.0:
        return np.arange(total, dtype=np.int64)
    k = max(1, int(round(frac * total)))
    return np.sort(rng.choice(total, size=k, replace=False)).astype(np.int64)


def _batch_of(rows: np.ndarray, n: int, cols: np.ndarray, p: int, full: bool) -> Batch:
    if full:
        return Batch.whole(n, p)
    rm = np.zeros(n, np.uint8)
    rm[rows] = 1
    cm = np.zeros(p, np.uint8)
    cm[cols] = 1
    return Batch(rows, cols, rm, cm, False)


def draw_batches(mosaic: Mosaic, frac_cells: float, frac_feat: float, rng: np.random.Generator) -> dict:
    """Each block's :class:`Batch` of one epoch: the cells of a batch drawn once for all its blocks, the features
    of a modality once for all its blocks, in the epoch's order (a batch's cells, then its modalities' features
    not drawn yet); full batches draw nothing."""
    rows, cols = {}, {}
    for batch, (n, _) in mosaic.batches.items():
        rows[batch] = draw(n, frac_cells, rng)
        for blk in mosaic.blocks_of_batch(batch):
            if blk.modality not in cols:
                cols[blk.modality] = draw(blk.data.p, frac_feat, rng)
    full = frac_cells >= 1.0 and frac_feat >= 1.0
    return {blk.name: _batch_of(rows[blk.batch], blk.data.n, cols[blk.modality], blk.data.p, full)
            for blk in mosaic.blocks}


class _Epoch:
    """One block's batch in one epoch, what the objective says about it, and side stats to reuse."""

    def __init__(self, blk: Block, batch: Batch):
        self.mod, self.batch = blk.data, batch
        self.I, self.J = batch.rows, batch.cols
        self.bs = obj.batch_stats(self.mod, batch)
        #: side_stats(C S, b) over all cells after the cell step's bias refit; still valid at the
        #: feature step (nothing between them changes this block's C, S or b); full batches only
        self.cell_side = None
        #: side_stats(C S, b) before this block's cell step (cached by ``_other_sides``; dropped at the step)
        self.before_step = None

    def take(self, arr, idx):
        return arr if self.batch.full else np.ascontiguousarray(arr[idx])

    def put(self, arr, idx, values):
        if self.batch.full:
            if values is not arr:
                arr[:] = values
        else:
            arr[idx] = values


def _other_sides(mosaic: Mosaic, mp: MosaicParams, eps: dict, blk: Block) -> list:
    """``(mod, side_stats(C S, b))`` of the other blocks of ``blk``'s modality, for its shared feature biases.

    A block not stepped yet in this epoch keeps the summary computed the first time it is asked for
    (its C, S and b do not change before its own step, which drops it): one per block and epoch.
    """
    out = []
    for o in mosaic.blocks_of_modality(blk.modality):
        if o.name != blk.name:
            ep = eps[o.name]
            side = ep.cell_side if ep.cell_side is not None else ep.before_step
            if side is None:
                side = obj.side_stats(obj.cell_factor(mp.cells[o.batch].C, mp.blocks[o.name].S), mp.blocks[o.name].b)
                ep.before_step = side
            out.append((o.data, side))
    return out


def _col_sums(mosaic: Mosaic, m: str):
    """:func:`objective.weighted_col_sums` of modality ``m``'s blocks, kept on the mosaic: the data's, fixed
    during the fit (None for one block, whose closed form needs none)."""
    blocks = mosaic.blocks_of_modality(m)
    if len(blocks) == 1:
        return None
    if ("col_sums", m) not in mosaic.cache:
        mosaic.cache[("col_sums", m)] = obj.weighted_col_sums([b.data for b in blocks])
    return mosaic.cache[("col_sums", m)]


def _cell_and_S_step(mosaic: Mosaic, mp: MosaicParams, batch: str, eps: dict, step: "_Stepper", it: int):
    """Gradient steps on one batch's cell logits (shared by its blocks) and on each block's S, then the
    closed-form biases of each block (b, then the modality's c)."""
    blocks = mosaic.blocks_of_batch(batch)
    cells = mp.cells[batch]
    ep0 = eps[blocks[0].name]
    I = ep0.I
    parts = []
    for blk in blocks:
        ep, feat, bf = eps[blk.name], mp.features[blk.modality], mp.blocks[blk.name]
        sv = obj.side_stats(ep.take(feat.Cf, ep.J), ep.take(feat.c, ep.J))
        XV = spmm(ep.mod.X, I, ep.batch.col_mask, feat.Cf)
        parts.append((ep.mod, ep.bs, XV, bf.S, sv, ep.take(bf.b, I)))

    for blk in blocks:
        eps[blk.name].before_step = None  # its C, S and b change now
    C_I = ep0.take(cells.C, I)
    C_I = step.logits("Z_" + batch, cells.Z, I, C_I, obj.cells_grad(mosaic, parts, C_I))
    _check_finite(C_I, "Z_" + batch, it)
    ep0.put(cells.C, I, C_I)

    for blk, (mod, bs, XV, S, sv, b_I) in zip(blocks, parts):
        others = [mp.blocks[o.name].S for o in mosaic.blocks if o.name != blk.name]
        gS = obj.association_grad(mosaic, bs, XV, C_I, S, sv, b_I, others)
        step("S_" + blk.name, S, gS, np.arange(S.shape[0], dtype=np.int64))
        _check_finite(S, "S_" + blk.name, it)
    for blk, (mod, bs, XV, S, sv, b_I) in zip(blocks, parts):
        ep, feat, bf = eps[blk.name], mp.features[blk.modality], mp.blocks[blk.name]
        # cells first: b, then c (objective.refit_biases); in a full batch, sv = side_stats(Cf, c) of the whole
        # modality, which nothing above changed
        U = obj.cell_factor(cells.C, bf.S)
        bf.b[:] = obj.cell_bias(mod, U, sv if ep.batch.full else obj.side_stats(feat.Cf, feat.c))
        last = obj.side_stats(U, bf.b)
        sides = [(mod, last)] + _other_sides(mosaic, mp, eps, blk)
        feat.c[:] = obj.feature_bias(sides, feat.Cf, _col_sums(mosaic, blk.modality))
        ep.cell_side = last if ep.batch.full else None


def _feature_step(mosaic: Mosaic, mp: MosaicParams, m: str, eps: dict, step: "_Stepper", it: int):
    """Gradient step on one modality's feature logits (shared by its blocks), then closed-form biases (c, then
    each block's b).

    Returns each block's weighted reconstruction term at the new point (full batches) or None.
    """
    blocks = mosaic.blocks_of_modality(m)
    feat = mp.features[m]
    J, ep0 = eps[blocks[0].name].J, eps[blocks[0].name]
    parts, U = [], {}
    for blk in blocks:
        ep, cells, bf = eps[blk.name], mp.cells[blk.batch], mp.blocks[blk.name]
        C_I, b_I = ep.take(cells.C, ep.I), ep.take(bf.b, ep.I)
        U[blk.name] = obj.cell_factor(C_I, bf.S)
        XtU = spmm_t(ep.mod.X, ep.mod.Xt, ep.I, ep.batch.row_mask, J, ep.batch.col_mask, U[blk.name])
        su = obj.side_stats(U[blk.name], b_I) if ep.cell_side is None else ep.cell_side
        parts.append((ep.bs, XtU, su))
    c_J = ep0.take(feat.c, J)
    V_J = ep0.take(feat.Cf, J)
    V_J = step.logits("Zf_" + m, feat.Zf, J, V_J, obj.features_grad(mosaic, m, mp.features, parts, V_J, c_J))
    _check_finite(V_J, "Zf_" + m, it)
    ep0.put(feat.Cf, J, V_J)

    full = all(eps[blk.name].batch.full for blk in blocks)
    if not full:  # features first over every cell: c, then each block's b
        obj.refit_features_first(mosaic, mp, m, _col_sums(mosaic, m))
        return None
    feat.c[:] = obj.feature_bias([(blk.data, su) for blk, (_, _, su) in zip(blocks, parts)], feat.Cf,
                                 _col_sums(mosaic, m))
    sv = obj.side_stats(feat.Cf, feat.c)  # at the new point
    recon = {}
    for blk, (bs, XtU, su) in zip(blocks, parts):
        bf = mp.blocks[blk.name]
        bf.b[:] = obj.cell_bias(blk.data, U[blk.name], sv)
        recon[blk.name] = obj.recon_after_feature_step(blk.data, bs, XtU, U[blk.name], V_J, sv, bf.b, feat.c)
    return recon


def block_epoch(mosaic: Mosaic, mp: MosaicParams, sched: Schedule, step: "_Stepper", rng, it: int) -> dict:
    """One epoch over a mosaic's blocks (the two-matrix fit's too: :meth:`Problem.as_mosaic`); returns the terms.

    Each batch in order: its cell logits, each of its blocks' S, the blocks' biases; then each modality (ATAC,
    RNA): its feature logits, the biases. Two passes over every block's nonzeros.
    """
    batches = draw_batches(mosaic, sched.batch_cells, sched.batch_features, rng)
    eps = {blk.name: _Epoch(blk, batches[blk.name]) for blk in mosaic.blocks}
    for batch in mosaic.batches:
        _cell_and_S_step(mosaic, mp, batch, eps, step, it)
    recon = {}
    for m in mosaic.modalities():
        r = _feature_step(mosaic, mp, m, eps, step, it)
        if r is None:
            recon = None
        elif recon is not None:
            recon.update(r)
    if recon is None:
        terms, _ = obj.evaluate_mosaic(mosaic, mp, with_grad=False)
        return terms
    return obj.mosaic_terms(mosaic, mp, recon)


def _epoch(problem: Problem, params: dict, sched: Schedule, step: "_Stepper", rng, it: int) -> dict:
    """One epoch of the two-matrix fit: :func:`block_epoch` on its view as a mosaic (the same arrays)."""
    return block_epoch(problem.as_mosaic(), MosaicParams.of_factors(params), sched, step, rng, it)


class Snapshot:
    """The answer of a fit at one epoch, for the ``stop="answer"`` rule: the argmax labels of the cells and
    features of both modalities, both S and the total loss. O(cells + features) integers."""

    GROUPS = ("cells_rna", "cells_atac", "genes", "regions")

    def __init__(self, labels: list, S: list, loss: float):
        self.labels, self.S, self.loss = labels, S, float(loss)

    @classmethod
    def of(cls, params: dict, loss: float) -> "Snapshot":
        labels = [np.argmax(params[m].C, axis=1).astype(np.int32) for m in ("rna", "atac")]
        labels += [np.argmax(params[m].Cf, axis=1).astype(np.int32) for m in ("rna", "atac")]
        return cls(labels, [params[m].S.astype(np.float64) for m in ("rna", "atac")], loss)

    def change(self, before: "Snapshot", epochs: int, cell_shares: tuple = ()) -> tuple:
        """``(label share, S change, loss change)`` since ``before``, ``epochs`` kept epochs ago.

        label share: the largest, over cells of each modality, genes and regions, of the share whose argmax
        changed; S change: the largest over both modalities of ``|S − S_before| / |S|`` (Frobenius); loss
        change: ``|L_before − L| / |L|`` per epoch. A snapshot whose cells live in row chunks holds None for
        their labels and the caller passes their shares, counted on the chunks, as ``cell_shares``.
        """
        lab = max([float(x) for x in cell_shares]
                  + [float(np.mean(a != b)) if a.size else 0.0 for a, b in zip(self.labels, before.labels)
                     if a is not None])
        ds = max(float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(a)), 1e-300)
                 for a, b in zip(self.S, before.S))
        dl = abs(before.loss - self.loss) / max(abs(self.loss), 1e-12) / max(epochs, 1)
        return lab, ds, dl


def answer_settled(sched: Schedule, change: tuple) -> bool:
    """Whether a change measured by :meth:`Snapshot.change` meets the ``stop="answer"`` tolerances."""
    lab, ds, dl = change
    return lab <= sched.label_tol and ds <= sched.S_tol and dl <= sched.tol


@dataclass
class RunState:
    """Everything one restart needs to go on from where it is (what a checkpoint stores)."""

    seed: int
    params: dict
    stepper: "_Stepper"
    rng: np.random.Generator
    history: list
    it: int = 0
    calm: int = 0
    undone: int = 0  # epochs undone by backtracking (they still count in ``it``)
    prev: float = float("nan")
    converged: bool = False
    stopped: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    snapshot: "Snapshot" = None  # the answer at the last check (``stop="answer"``)
    kept: int = 0  # epochs kept since that snapshot
    change: tuple = ()  # the last measured (label share, S change, loss change per epoch)
    stop_reason: str = ""
    chunks: dict = None  # the Dask fit's cell state, per modality a list of row-chunk futures (dask_driver)

    @property
    def finished(self) -> bool:
        return self.converged or self.stopped or self.interrupted

    def outcome(self) -> RunOutcome:
        return RunOutcome(self.params, np.asarray(self.history), self.it, self.converged, self.seed, self.stopped,
                          self.seconds, self.undone, self.stop_reason, tuple(self.change), self.chunks)

    def pack(self, prefix: str, arrays: dict) -> dict:
        """This state's arrays into ``arrays`` (keys under ``prefix``); returns its JSON-able scalars.

        :meth:`unpack` reads both back; :mod:`fastjmt.checkpoint` writes them to a file.
        """
        if isinstance(self.params, MosaicParams):
            self.params.pack(prefix, arrays)
        else:
            for m in MODALITIES:
                for name in Factors.FIELDS:
                    arrays[f"{prefix}/{m}/{name}"] = getattr(self.params[m], name)
        arrays[f"{prefix}/history"] = np.asarray(self.history, dtype=np.float64)
        if self.snapshot is not None:
            for i, lab in enumerate(self.snapshot.labels):
                if lab is not None:  # None: cells in row chunks, whose labels the chunks keep
                    arrays[f"{prefix}/snapshot/labels{i}"] = lab
            for i, S in enumerate(self.snapshot.S):
                arrays[f"{prefix}/snapshot/S{i}"] = S
        for key, (M, V) in self.stepper.state.items():
            name = _adam_name(self.stepper, key, isinstance(self.params, MosaicParams))
            arrays[f"{prefix}/adam/{name}/M"] = M
            arrays[f"{prefix}/adam/{name}/V"] = V
        return {
            "snapshot_sizes": None if self.snapshot is None else [len(self.snapshot.labels), len(self.snapshot.S)],
            "seed": int(self.seed),
            "it": int(self.it),
            "calm": int(self.calm),
            "undone": int(self.undone),
            "lr": float(self.stepper.lr),
            "lr_max": float(self.stepper.lr_max),
            "prev": float(self.prev),
            "converged": bool(self.converged),
            "stopped": bool(self.stopped),
            "interrupted": bool(self.interrupted),
            "seconds": float(self.seconds),
            "steps": {k: int(v) for k, v in self.stepper.steps.items()},
            "snapshot_loss": None if self.snapshot is None else float(self.snapshot.loss),
            "kept": int(self.kept),
            "change": [float(x) for x in self.change],
            "stop_reason": self.stop_reason,
            "rng": self.rng.bit_generator.state,
        }

    @classmethod
    def unpack(cls, meta: dict, arrays, prefix: str, sched: Schedule, like=None) -> "RunState":
        """A state back from :meth:`pack`'s scalars ``meta`` and ``arrays``; ``like``: a mosaic's
        :class:`MosaicParams` whose layout the stored ones have (None: a two-matrix fit)."""
        if like is not None:
            params = MosaicParams.unpack(arrays, prefix, like)
        else:
            params = {m: Factors(*(np.array(arrays[f"{prefix}/{m}/{name}"]) for name in Factors.FIELDS))
                      for m in MODALITIES}
        stepper = _Stepper(sched, params)
        for key in stepper.state:
            name = _adam_name(stepper, key, like is not None)
            stepper.state[key] = (np.array(arrays[f"{prefix}/adam/{name}/M"]),
                                  np.array(arrays[f"{prefix}/adam/{name}/V"]))
        stepper.steps = dict(meta["steps"])
        stepper.lr = float(meta["lr"])
        stepper.lr_max = float(meta.get("lr_max", sched.learning_rate))
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        history = [list(row) for row in np.asarray(arrays[f"{prefix}/history"])]
        snapshot = None
        if meta.get("snapshot_loss") is not None:  # checkpoints of the stop="answer" rule
            n_labels, n_S = meta.get("snapshot_sizes") or (4, 2)
            labels = [f"{prefix}/snapshot/labels{i}" for i in range(n_labels)]
            snapshot = Snapshot([np.array(arrays[k]) if k in arrays else None for k in labels],
                                [np.array(arrays[f"{prefix}/snapshot/S{i}"]) for i in range(n_S)],
                                meta["snapshot_loss"])
        return cls(meta["seed"], params, stepper, rng, history, it=meta["it"], calm=meta["calm"],
                   undone=meta["undone"], prev=meta["prev"], converged=meta["converged"], stopped=meta["stopped"],
                   interrupted=meta["interrupted"], seconds=meta["seconds"], snapshot=snapshot,
                   kept=int(meta.get("kept", 0)), change=tuple(meta.get("change", ())),
                   stop_reason=meta.get("stop_reason", ""))


def _adam_name(stepper: "_Stepper", key: str, mosaic: bool) -> str:
    """The name of a block's optimiser state in a checkpoint: its key for the two-matrix fit's blocks
    (``Z_atac`` …), its position for a mosaic's (batch names may hold any character)."""
    return f"block{list(stepper.steps).index(key)}" if mosaic else key


def start_run(problem: Problem, sched: Schedule, n_shared: int, n_rna_only: int, n_atac_only: int,
              seed: int) -> RunState:
    """A restart's starting point: initialised factors, fresh optimiser state, the loss at epoch 0."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    params = initialize(problem, n_shared, n_rna_only, n_atac_only, sched.init, rng, sched.init_scale)
    terms, _ = obj.evaluate(problem, params, with_grad=False)
    return _started(sched, seed, rng, params, terms, Snapshot.of, t0)


def _started(sched: Schedule, seed: int, rng, params, terms: dict, snapshot_of, t0: float) -> RunState:
    """A restart's state at epoch 0 from its starting ``params`` and their ``terms``: fresh optimiser state, the
    loss history's first row, the first snapshot of the answer (``snapshot_of(params, loss)``) for ``stop="answer"``."""
    state = RunState(seed, params, _Stepper(sched, params), rng, [[terms[t] for t in TERMS] + [terms["total"]]],
                     prev=terms["total"])
    if sched.stop == "answer":
        state.snapshot = snapshot_of(params, terms["total"])
    state.seconds = time.perf_counter() - t0
    return state


def advance(problem: Problem, sched: Schedule, state: RunState, should_stop=None, on_epoch=None,
            engine=None) -> RunState:
    """Run epochs from ``state.it + 1`` until convergence, ``max_iter``, the callback or ``should_stop()``.

    ``on_epoch(state)`` runs after every completed epoch (the checkpoint hook);
    ``should_stop()`` is asked after every epoch (the Ctrl-C hook), so the state
    is always that of a whole epoch. ``engine`` runs the epochs (:class:`InMemory`
    by default; :class:`fastjmt.dask_driver.Chunked` for cells in Dask row chunks):
    the schedule, backtracking and stopping here are the same for both.
    """
    t0 = time.perf_counter()
    engine = InMemory(problem, sched) if engine is None else engine
    progress = Progress(sched.verbose, sched.max_iter, sched.log_every, start=state.it)
    try:
        _advance(engine, sched, state, should_stop, on_epoch, progress)
    finally:
        progress.close()
    state.seconds += time.perf_counter() - t0
    return state


class InMemory:
    """The epochs of a fit whose data and factors are all in this process (the default engine of :func:`advance`).

    An engine has ``epoch(state, it) → terms``, ``save(state)`` (a save point with ``terms`` and
    ``restore(state)``, for backtracking) and ``measure(state, loss) → (snapshot, change, cell share)``
    (the ``stop="answer"`` rule's reading: a new :class:`Snapshot`, :meth:`Snapshot.change` since
    ``state.snapshot``, and the largest share of cells of a modality whose argmax changed).
    """

    def __init__(self, problem: Problem, sched: Schedule, layout: tuple = None):
        self.problem, self.sched, self.layout = problem, sched, layout

    def start(self, seed: int) -> "RunState":
        return start_run(self.problem, self.sched, *self.layout, seed)

    def save_cells(self, path, states: dict):
        """Nothing: in memory the cells are in the states' params, which the checkpoint holds."""
        return None

    def saved_cells(self, path, manifest) -> None:
        return None

    def load_cells(self, manifest, states: dict) -> None:
        return None

    def epoch(self, state: "RunState", it: int) -> dict:
        return _epoch(self.problem, state.params, self.sched, state.stepper, state.rng, it)

    def save(self, state: "RunState") -> "_SavePoint":
        return _SavePoint(state)

    def snapshot(self, state: "RunState", loss: float) -> Snapshot:
        return Snapshot.of(state.params, loss)

    def measure(self, state: "RunState", loss: float) -> tuple:
        now = Snapshot.of(state.params, loss)
        change = now.change(state.snapshot, state.kept)
        cells = max(float(np.mean(a != b)) for a, b in zip(now.labels[:2], state.snapshot.labels[:2]))
        return now, change, cells


class MosaicEngine(InMemory):
    """The epochs of a mosaic fit (:func:`fastjmt.fit_mosaic`): :func:`block_epoch` on
    :class:`~fastjmt.problem.MosaicParams`, started by ``start_params(rng)`` (the mosaic's start); the
    engine interface of :class:`InMemory`. The answer it watches: each batch's cell argmax, each modality's
    feature argmax, each block's S."""

    def __init__(self, mosaic: Mosaic, sched: Schedule, start_params):
        super().__init__(None, sched)
        self.mosaic, self.start_params = mosaic, start_params

    def start(self, seed: int) -> "RunState":
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        mp = self.start_params(rng)
        terms, _ = obj.evaluate_mosaic(self.mosaic, mp, with_grad=False)
        return _started(self.sched, seed, rng, mp, terms, self._snapshot_of, t0)

    def epoch(self, state: "RunState", it: int) -> dict:
        return block_epoch(self.mosaic, state.params, self.sched, state.stepper, state.rng, it)

    def params_layout(self) -> MosaicParams:
        """The names and order of the batches, modalities and blocks (what a checkpoint is read into)."""
        return MosaicParams({k: None for k in self.mosaic.batches}, {m: None for m in self.mosaic.modalities()},
                            {b.name: None for b in self.mosaic.blocks})

    def snapshot(self, state: "RunState", loss: float) -> Snapshot:
        return self._snapshot_of(state.params, loss)

    def _snapshot_of(self, mp: MosaicParams, loss: float) -> Snapshot:
        labels = [np.argmax(mp.cells[k].C, axis=1).astype(np.int32) for k in self.mosaic.batches]
        labels += [np.argmax(mp.features[m].Cf, axis=1).astype(np.int32) for m in self.mosaic.modalities()]
        return Snapshot(labels, [mp.blocks[b.name].S.astype(np.float64) for b in self.mosaic.blocks], loss)

    def measure(self, state: "RunState", loss: float) -> tuple:
        now = self.snapshot(state, loss)
        change = now.change(state.snapshot, state.kept)
        nb = len(self.mosaic.batches)
        cells = max(float(np.mean(a != b)) if a.size else 0.0
                    for a, b in zip(now.labels[:nb], state.snapshot.labels[:nb]))
        return now, change, cells


def _advance(engine, sched, state, should_stop, on_epoch, progress):
    while not state.finished and state.it < sched.max_iter:
        it = state.it + 1
        state.stop_reason = ""
        te = time.perf_counter()
        saved = engine.save(state) if sched.backtrack else None
        terms = engine.epoch(state, it)
        if not np.isfinite(terms["total"]):
            raise NonFiniteError(f"the loss became non-finite at iteration {it}")
        kept = saved is None or _backtrack(sched, state, saved, terms["total"])
        if not kept:
            terms = saved.terms
        state.it = it
        state.history.append([terms[t] for t in TERMS] + [terms["total"]])
        progress.update(it, terms, time.perf_counter() - te)
        settled = False
        if kept:
            rel = abs(state.prev - terms["total"]) / max(abs(terms["total"]), 1e-12)
            state.prev = terms["total"]
            if sched.stop == "loss":
                state.calm = state.calm + 1 if rel < sched.tol else 0
                settled = state.calm >= sched.patience
            else:
                settled = _check_answer(sched, state, terms["total"], engine)
        if sched.callback is not None and sched.callback(it, dict(terms), state.params):
            state.stopped, state.stop_reason = True, "callback"
        elif settled:
            state.converged, state.stop_reason = True, sched.stop
        elif state.stepper.lr < sched.min_step * sched.learning_rate:
            state.converged, state.stop_reason = True, "step"
        elif it >= sched.max_iter:
            state.stop_reason = "max_iter"
        if should_stop is not None and should_stop() and not state.finished:
            state.interrupted, state.stop_reason = True, "interrupted"
        if on_epoch is not None:
            on_epoch(state)


def _check_answer(sched: Schedule, state: RunState, loss: float, engine=None) -> bool:
    """The ``stop="answer"`` rule, after a kept epoch: every ``window`` kept epochs, measure how much the
    answer changed since the last check (``engine.measure``) and take a new snapshot.

    Undone epochs do not count: they leave the answer as it was, which must not read as "settled".
    """
    engine = InMemory(None, sched) if engine is None else engine
    state.kept += 1
    if state.snapshot is None:  # resumed from a checkpoint written without one
        state.snapshot, state.kept = engine.snapshot(state, loss), 0
        return False
    if state.kept < sched.window:
        return False
    now, state.change, cells_share = engine.measure(state, loss)
    cells_settled = cells_share <= sched.label_tol
    state.snapshot, state.kept = now, 0
    settled = answer_settled(sched, state.change)
    if not settled and cells_settled and state.change[2] <= 10 * sched.tol and sched.step_decay < 1.0:
        # no cell moves and the loss has nearly settled (within 10 tol per epoch): what still moves is mostly
        # Adam's step-sized jitter of the features and S, which only a smaller step ends
        st = state.stepper
        st.lr_max *= sched.step_decay
        st.lr = min(st.lr, st.lr_max)
    return settled


class _SavePoint:
    """Copies of a restart's factors and optimiser state before an epoch, to undo it.

    O((cells + features) · K) memory: about twice the factors, never the data.
    """

    def __init__(self, state: RunState):
        st = state.stepper
        mosaic = isinstance(state.params, MosaicParams)
        self.params = state.params.copy() if mosaic else {m: f.copy() for m, f in state.params.items()}
        self.adam = {k: (M.copy(), V.copy()) for k, (M, V) in st.state.items()}
        self.steps = dict(st.steps)
        self.terms = dict(zip(TERMS + ("total",), state.history[-1]))
        self.chunks = None if state.chunks is None else dict(state.chunks)  # futures of immutable chunk states

    def restore(self, state: RunState):
        if isinstance(self.params, MosaicParams):
            state.params = self.params
        else:
            state.params.update(self.params)
        state.stepper.state = self.adam
        state.stepper.steps = self.steps
        if self.chunks is not None:
            state.chunks = self.chunks


def _backtrack(sched: Schedule, state: RunState, saved: _SavePoint, loss: float) -> bool:
    """Keep the epoch if it did not raise the loss (the step then grows back toward ``learning_rate``);
    otherwise undo it and halve the step. Returns whether the epoch was kept."""
    step = state.stepper
    if loss <= state.prev:
        step.lr = min(step.lr * sched.step_regrow, step.lr_max)
        return True
    saved.restore(state)
    step.lr *= sched.step_shrink
    state.undone += 1
    return False


def run_once(problem: Problem, sched: Schedule, n_shared: int, n_rna_only: int, n_atac_only: int,
             seed: int) -> RunOutcome:
    """One restart: initialise from ``seed`` and iterate until convergence or ``max_iter``."""
    state = start_run(problem, sched, n_shared, n_rna_only, n_atac_only, seed)
    return advance(problem, sched, state).outcome()


@dataclass
class FitOutcome:
    """All restarts of a fit: the kept one, every restart's final loss, and whether Ctrl-C cut it short."""

    best: RunOutcome
    losses: list
    interrupted: bool


def fit_restarts(problem: Problem, sched: Schedule, layout: tuple, seeds: list, fingerprint: dict,
                 checkpoint=None, checkpoint_every: int = 0, resume=None, should_stop=None,
                 engine=None) -> FitOutcome:
    """Run (or resume) the restarts, keep the lowest final loss, and write checkpoints on the way.

    A checkpoint is written every ``checkpoint_every`` epochs, after every
    restart, and when ``should_stop()`` turns true (Ctrl-C); ``resume`` reads one
    back and goes on as if the fit had never stopped. ``engine``: as for
    :func:`advance` (:class:`InMemory` by default); it also starts each restart
    (``engine.start(seed)``) and, for cells that live outside this process,
    writes and reads their part of a checkpoint (``engine.save_cells`` /
    ``engine.load_cells``).
    """
    from . import checkpoint as ckpt

    engine = InMemory(problem, sched, layout) if engine is None else engine
    losses, best, cur, r0 = [], None, None, 0
    if resume is not None:
        meta, arrays = ckpt.load(resume)
        ckpt.check_fingerprint(meta, fingerprint, resume)
        r0, losses = int(meta["restart"]), list(meta["losses"])
        like = engine.params_layout() if hasattr(engine, "params_layout") else None
        best = RunState.unpack(meta["best"], arrays, "best", sched, like) if meta["best"] is not None else None
        if meta["current"] is not None:
            cur = RunState.unpack(meta["current"], arrays, "current", sched, like)
            cur.interrupted = cur.stopped = False  # resuming means going on, after Ctrl-C or a callback's stop
        engine.load_cells(meta.get("cells"), {"best": best, "current": cur})
        logger.info("resuming from %s: restart %d, epoch %d", resume, r0 + 1, cur.it if cur else 0)

    def write(restart, current):
        if checkpoint is None:
            return
        arrays = {}
        meta = {
            "fingerprint": fingerprint,
            "restart": restart,
            "losses": [float(x) for x in losses],
            "current": current.pack("current", arrays) if current is not None else None,
            "best": best.pack("best", arrays) if best is not None else None,
            "cells": engine.save_cells(checkpoint, {"best": best, "current": current}),
        }
        ckpt.save(checkpoint, meta, arrays)
        engine.saved_cells(checkpoint, meta["cells"])

    interrupted = False
    for r in range(r0, len(seeds)):
        if cur is None:
            cur = engine.start(seeds[r])

        def on_epoch(state, r=r):
            if checkpoint_every and state.it % checkpoint_every == 0 and not (state.interrupted or state.stopped):
                write(r, state)

        advance(problem, sched, cur, should_stop, on_epoch, engine)
        if cur.interrupted or cur.stopped:
            write(r, cur)  # resumable: this restart goes on from here (the state of a whole epoch)
            interrupted = interrupted or cur.interrupted
        final = cur.history[-1][-1]
        losses.append(final)
        if sched.verbose:
            logger.info("restart %d/%d (seed %d): loss %.6g after %d epochs (%d undone), %.2fs%s", r + 1, len(seeds),
                        cur.seed, final, cur.it, cur.undone, cur.seconds, " (interrupted)" if cur.interrupted else "")
        if best is None or final < best.history[-1][-1]:
            best = cur
        if interrupted or cur.stopped:
            break
        cur = None
        write(r + 1, None)
    if best is None:  # resumed from the checkpoint of a finished fit
        raise CheckpointError(f"checkpoint {resume!r} holds no finished restart")
    return FitOutcome(best.outcome(), losses, interrupted)

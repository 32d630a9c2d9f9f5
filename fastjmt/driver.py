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
from .problem import MODALITIES, Batch, Factors, Problem
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

    def __init__(self, sched: Schedule, params: dict):
        self.s = sched
        self.lr = sched.learning_rate  # the current step size (see ``_backtrack``)
        self.lr_max = sched.learning_rate  # the ceiling backtracking regrows it to (lowered by ``step_decay``)
        self.state = {}
        self.steps = {}
        for m in MODALITIES:
            f = params[m]
            for key, arr in (("Z_" + m, f.Z), ("S_" + m, f.S), ("Zf_" + m, f.Zf)):
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


def _draw_batch(n: int, p: int, frac_cells: float, frac_feat: float, rng: np.random.Generator) -> Batch:
    if frac_cells >= 1.0 and frac_feat >= 1.0:
        return Batch.whole(n, p)
    rows, cols = draw(n, frac_cells, rng), draw(p, frac_feat, rng)
    rm = np.zeros(n, np.uint8)
    rm[rows] = 1
    cm = np.zeros(p, np.uint8)
    cm[cols] = 1
    return Batch(rows, cols, rm, cm, False)


class _Epoch:
    """One modality's batch in one epoch, what the objective says about it, and side stats to reuse."""

    def __init__(self, problem: Problem, name: str, f: Factors, batch: Batch):
        self.mod, self.f, self.batch = problem.modality(name), f, batch
        self.I, self.J = batch.rows, batch.cols
        self.bs = obj.batch_stats(self.mod, batch)
        #: side_stats(C S, b) over all cells after the cell step's bias refit; still valid at the
        #: feature step (nothing between them changes this modality's C, S or b); full batches only
        self.cell_side = None

    def take(self, arr, idx):
        return arr if self.batch.full else np.ascontiguousarray(arr[idx])

    def put(self, arr, idx, values):
        if self.batch.full:
            if values is not arr:
                arr[:] = values
        else:
            arr[idx] = values


def _cell_and_S_step(problem, name, ep: _Epoch, other_S, step: _Stepper, it: int):
    """Gradient steps on this modality's cell logits and on S, then closed-form biases."""
    f, I, J = ep.f, ep.I, ep.J
    V_J, c_J, b_I = ep.take(f.Cf, J), ep.take(f.c, J), ep.take(f.b, I)
    sv = obj.side_stats(V_J, c_J)
    XV = spmm(ep.mod.X, I, ep.batch.col_mask, f.Cf)

    C_I = ep.take(f.C, I)
    C_I = step.logits("Z_" + name, f.Z, I, C_I, obj.cell_grad(problem, ep.mod, ep.bs, XV, C_I, f.S, sv, b_I))
    _check_finite(C_I, "Z_" + name, it)
    ep.put(f.C, I, C_I)

    gS = obj.association_grad(problem, ep.bs, XV, C_I, f.S, sv, b_I, other_S)
    step("S_" + name, f.S, gS, np.arange(f.S.shape[0], dtype=np.int64))
    _check_finite(f.S, "S_" + name, it)

    # in a full batch, sv = side_stats(Cf, c) of the whole modality, which nothing above changed
    cell_side = obj.refit_biases(ep.mod, f, cells_first=True, known=sv if ep.batch.full else None)
    ep.cell_side = cell_side if ep.batch.full else None


def _feature_step(problem, name, ep: _Epoch, params: dict, step: _Stepper, it: int):
    """Gradient step on this modality's feature logits, then closed-form biases.

    Returns the weighted reconstruction term at the new point (full batches) or None.
    """
    f, I, J = ep.f, ep.I, ep.J
    C_I, b_I, c_J = ep.take(f.C, I), ep.take(f.b, I), ep.take(f.c, J)
    U_I = obj.cell_factor(C_I, f.S)
    XtU = spmm_t(ep.mod.X, ep.mod.Xt, I, ep.batch.row_mask, J, ep.batch.col_mask, U_I)
    su = obj.side_stats(U_I, b_I) if ep.cell_side is None else ep.cell_side
    V_J = ep.take(f.Cf, J)
    V_J = step.logits("Zf_" + name, f.Zf, J, V_J, obj.feature_grad(problem, name, params, ep.bs, XtU, V_J, su, c_J))
    _check_finite(V_J, "Zf_" + name, it)
    ep.put(f.Cf, J, V_J)

    if not ep.batch.full:
        obj.refit_biases(ep.mod, f, cells_first=False)
        return None
    sv = obj.refit_biases(ep.mod, f, cells_first=False, U=U_I, known=su)  # side_stats(Cf, c) at the new point
    return obj.recon_after_feature_step(ep.mod, ep.bs, XtU, U_I, V_J, sv, f.b, f.c)


def _epoch(problem: Problem, params: dict, sched: Schedule, step: _Stepper, rng, it: int) -> dict:
    eps = {}
    for name in MODALITIES:
        mod = problem.modality(name)
        eps[name] = _Epoch(problem, name, params[name],
                           _draw_batch(mod.n, mod.p, sched.batch_cells, sched.batch_features, rng))
    for name, other in (("atac", "rna"), ("rna", "atac")):
        _cell_and_S_step(problem, name, eps[name], params[other].S, step, it)
    recon = {name: _feature_step(problem, name, eps[name], params, step, it) for name in MODALITIES}
    if recon["atac"] is None or recon["rna"] is None:
        terms, _ = obj.evaluate(problem, params, with_grad=False)
        return terms
    return obj.complete_terms(problem, params, recon)


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
            arrays[f"{prefix}/adam/{key}/M"] = M
            arrays[f"{prefix}/adam/{key}/V"] = V
        return {
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
    def unpack(cls, meta: dict, arrays, prefix: str, sched: Schedule) -> "RunState":
        """A state back from :meth:`pack`'s scalars ``meta`` and ``arrays``."""
        params = {m: Factors(*(np.array(arrays[f"{prefix}/{m}/{name}"]) for name in Factors.FIELDS))
                  for m in MODALITIES}
        stepper = _Stepper(sched, params)
        for key in stepper.state:
            stepper.state[key] = (np.array(arrays[f"{prefix}/adam/{key}/M"]),
                                  np.array(arrays[f"{prefix}/adam/{key}/V"]))
        stepper.steps = dict(meta["steps"])
        stepper.lr = float(meta["lr"])
        stepper.lr_max = float(meta.get("lr_max", sched.learning_rate))
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        history = [list(row) for row in np.asarray(arrays[f"{prefix}/history"])]
        snapshot = None
        if meta.get("snapshot_loss") is not None:  # checkpoints of the stop="answer" rule
            labels = [f"{prefix}/snapshot/labels{i}" for i in range(4)]
            snapshot = Snapshot([np.array(arrays[k]) if k in arrays else None for k in labels],
                                [np.array(arrays[f"{prefix}/snapshot/S{i}"]) for i in range(2)], meta["snapshot_loss"])
        return cls(meta["seed"], params, stepper, rng, history, it=meta["it"], calm=meta["calm"],
                   undone=meta["undone"], prev=meta["prev"], converged=meta["converged"], stopped=meta["stopped"],
                   interrupted=meta["interrupted"], seconds=meta["seconds"], snapshot=snapshot,
                   kept=int(meta.get("kept", 0)), change=tuple(meta.get("change", ())),
                   stop_reason=meta.get("stop_reason", ""))


def start_run(problem: Problem, sched: Schedule, n_shared: int, n_rna_only: int, n_atac_only: int,
              seed: int) -> RunState:
    """A restart's starting point: initialised factors, fresh optimiser state, the loss at epoch 0."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    params = initialize(problem, n_shared, n_rna_only, n_atac_only, sched.init, rng, sched.init_scale)
    terms, _ = obj.evaluate(problem, params, with_grad=False)
    state = RunState(seed, params, _Stepper(sched, params), rng, [[terms[t] for t in TERMS] + [terms["total"]]],
                     prev=terms["total"])
    if sched.stop == "answer":
        state.snapshot = Snapshot.of(params, terms["total"])
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
        self.params = {m: f.copy() for m, f in state.params.items()}
        self.adam = {k: (M.copy(), V.copy()) for k, (M, V) in st.state.items()}
        self.steps = dict(st.steps)
        self.terms = dict(zip(TERMS + ("total",), state.history[-1]))
        self.chunks = None if state.chunks is None else dict(state.chunks)  # futures of immutable chunk states

    def restore(self, state: RunState):
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
        best = RunState.unpack(meta["best"], arrays, "best", sched) if meta["best"] is not None else None
        if meta["current"] is not None:
            cur = RunState.unpack(meta["current"], arrays, "current", sched)
            cur.interrupted = False
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
            if checkpoint_every and state.it % checkpoint_every == 0 and not state.interrupted:
                write(r, state)

        advance(problem, sched, cur, should_stop, on_epoch, engine)
        if cur.interrupted:
            write(r, cur)  # resumable: this restart goes on from here
            interrupted = True
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

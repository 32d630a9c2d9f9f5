"""The fit on Dask arrays: cells in row chunks on the workers, the driver in this process.

A fit whose RNA or ATAC is a Dask array (row chunks of scipy CSR or dense
NumPy) runs here (:func:`fastjmt.fit` dispatches to :func:`fit`). The epoch is
the in-memory one (:mod:`fastjmt.driver`) as map/reduce over row chunks:

- every cell-sized array (logits, memberships, their Adam moments, the cell
  biases) lives in one :class:`fastjmt.chunks.ChunkState` per row chunk, on the
  worker that computed it, as a Dask future; it is never gathered to the
  client during the fit;
- the feature memberships, S and the feature biases (features × K and K × K)
  live in the client, which steps them from sums of the chunks' parts (Gram
  products, ``Xᵀ U``, column sums), added by Dask's tree reduction
  (``dask.bag.Bag.reduction``, ``split_every`` :data:`SPLIT_EVERY`);
- schedule, backtracking, stopping and restarts are the in-memory driver's
  (:func:`fastjmt.driver.advance` with the :class:`Chunked` engine).

Each epoch makes two passes over each modality's nonzeros, as in memory; the
data chunks are read again for each pass (out of core) unless ``persist=True``
keeps the prepared chunks in the workers' memory.

Threads: each task runs the Numba kernels with ``n_threads`` threads when the
caller sets it, else with ``max(1, cores of the worker's host // Dask threads
of all workers on that host)``, so Dask's threads times Numba's never exceed
the cores; BLAS runs one thread inside a task (:func:`fastjmt._threads.fit_threads`).
"""

from __future__ import annotations

import logging
import operator
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from . import chunks as ck
from . import objective as obj
from . import preprocess as pp
from ._threads import fit_threads
from .driver import (FitOutcome, RunState, Schedule, Snapshot, _check_finite, _SavePoint, _Stepper, fit_restarts,
                     schedule_of)
from .initialize import initialize
from .problem import MODALITIES, WEIGHT_OF, Factors, Modality, Problem, build_problem, masked_columns, transpose
from .transform import start_centroids

logger = logging.getLogger("fastjmt")

#: how many partial sums one task of the tree reduction adds (Dask's default for bags is 8)
SPLIT_EVERY = 8


# --------------------------------------------------------------------------- inputs


def is_dask(X) -> bool:
    """Whether ``X`` is a Dask array (without importing Dask when it is not installed or not used)."""
    return type(X).__module__.startswith("dask.") and hasattr(X, "chunks") and hasattr(X, "to_delayed")


def check_dask_matrix(X, name: str) -> None:
    """Raise a clear error, naming ``name``, for a Dask array the fit cannot take; before any work."""
    if not is_dask(X):
        raise TypeError(f"{name}: when one modality is a Dask array the other must be one too (wrap it with "
                        f"dask.array.from_array({name}, chunks=(rows, -1)))")
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D Dask array (cells × features), got {X.ndim} dimension(s)")
    if len(X.chunks[1]) != 1:
        raise ValueError(f"{name} is chunked along its features ({len(X.chunks[1])} column chunks); the Dask fit "
                         f"takes row chunks that hold every feature: {name}.rechunk({{1: -1}})")
    if any(c == 0 for c in X.chunks[0]):
        raise ValueError(f"{name} has an empty row chunk; rechunk it ({name}.rechunk({{0: 'auto'}}))")
    meta = getattr(X, "_meta", None)
    if meta is not None:
        ck.check_block(meta, name)


# --------------------------------------------------------------------------- the cluster


def _client(client):
    """The caller's client, or a new ``LocalCluster`` sized to this machine (and whether the fit owns it)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - the extra is installed where the Dask tests run
        raise ImportError("Dask inputs need the dask extra: pip install 'fastjmt[dask]'") from err
    if client is not None:
        return client, False
    cores = os.cpu_count() or 1
    n_workers = max(1, cores // 4)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), True


def task_threads(client, n_threads) -> dict:
    """Numba threads per task on each worker (address → count); see the module's *Threads*."""
    info = client.scheduler_info()["workers"]
    if n_threads is not None:
        return {addr: int(n_threads) for addr in info}
    cores = client.run(os.cpu_count)
    per_host = {}
    for addr, w in info.items():
        per_host[w["host"]] = per_host.get(w["host"], 0) + int(w["nthreads"])
    return {addr: max(1, int(cores.get(addr) or 1) // per_host[w["host"]]) for addr, w in info.items()}


def _run(threads: dict, fn, *args):
    """Run ``fn(*args)`` in a task with this worker's Numba threads and one BLAS thread."""
    try:
        from distributed import get_worker

        n = threads.get(get_worker().address, 1)
    except (ImportError, ValueError):
        n = max(threads.values()) if threads else 1
    with fit_threads(n):
        return fn(*args)


def _listed(x):
    return [x]


# --------------------------------------------------------------------------- the engine


class Chunked:
    """The engine of :func:`fastjmt.driver.advance` for cells in row chunks (see the module docstring)."""

    def __init__(self, client, problem: Problem, sched: Schedule, data: dict, hyper: dict, threads: dict, opts=None,
                 sums: dict = None, A=None):
        self.client, self.problem, self.sched = client, problem, sched
        self.data, self.hyper, self.threads = data, hyper, threads
        self.opts, self.sums, self.A = opts, sums, A

    # -- restarts and checkpoints (driver.fit_restarts)
    def start(self, seed: int) -> RunState:
        return _start(self, self.problem, self.opts, self.sched, seed, self.sums, self.A)

    def save_cells(self, path, states: dict) -> dict:
        """Each chunk's state written by its task to a new folder beside the checkpoint file (``<path>.cells/``;
        every worker must see that folder); returns the manifest the checkpoint stores."""
        import uuid

        from dask import delayed

        folder = os.path.join(os.fspath(path) + ".cells", uuid.uuid4().hex)
        os.makedirs(folder)
        manifest, tasks = {"folder": folder}, []
        for key, state in states.items():
            if state is None:
                continue
            for m in MODALITIES:
                files = [os.path.join(folder, f"{key}_{m}_{i}.npz") for i in range(len(state.chunks[m]))]
                tasks += [delayed(ck.save_state, pure=False)(st, f) for st, f in zip(state.chunks[m], files)]
                manifest[f"{key}/{m}"] = files
        _compute(self.client, tasks)
        return manifest

    def saved_cells(self, path, manifest: dict) -> None:
        """After the checkpoint file names ``manifest``'s folder: the older folders go."""
        import shutil

        root = os.fspath(path) + ".cells"
        for name in os.listdir(root):
            if name != os.path.basename(manifest["folder"]):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def load_cells(self, manifest, states: dict) -> None:
        """The chunks' states back from :meth:`save_cells`' files, read by tasks on the workers."""
        from dask import delayed

        from .errors import CheckpointError

        if manifest is None:
            raise CheckpointError("this checkpoint holds no row-chunk states (it was written by an in-memory fit): "
                                  "resume it with in-memory inputs")
        missing = [f for key, files in manifest.items() if key != "folder" for f in files if not os.path.isfile(f)]
        if missing:
            raise CheckpointError(f"the checkpoint's cell states are missing ({len(missing)} files, e.g. "
                                  f"{missing[0]!r}); resume needs the folder {manifest['folder']!r} it names")
        for key, state in states.items():
            if state is not None:
                state.chunks = {m: self.client.compute([delayed(ck.load_state, pure=False)(f)
                                                        for f in manifest[f"{key}/{m}"]], optimize_graph=False)
                                for m in MODALITIES}

    # -- map and reduce
    def _map(self, fn, jobs: dict, with_data=True) -> dict:
        """``fn(data_i, state_i, *args)`` (or ``fn(state_i, *args)``) on every chunk of each modality in
        ``jobs = {name: (states, args)}`` (or ``(states, args, chunk indices)`` for some of the chunks), all in
        one round trip to the scheduler: per modality the futures of the new states and the sum of the chunks'
        parts (a tree reduction)."""
        from dask import delayed
        import dask.bag as db

        new, totals = [], []
        for name, job in jobs.items():
            states, args = job[0], job[1]
            index = job[2] if len(job) > 2 else range(len(states))  # which chunks the states are
            shared = [delayed(a, pure=True) if isinstance(a, np.ndarray) and a.size > 4096 else a for a in args]
            outs = []
            for i, st in zip(index, states):
                head = (self.data[name][i], st) if with_data else (st,)
                outs.append(delayed(_run, pure=False, nout=2)(self.threads, fn, *head, *shared))
            parts = db.from_delayed([delayed(_listed, pure=False)(o[1]) for o in outs])
            totals.append(parts.reduction(operator.itemgetter(0), ck.sum_parts, split_every=SPLIT_EVERY))
            new.append([o[0] for o in outs])
        futures = self.client.compute([f for group in new for f in group] + totals, optimize_graph=False)
        sums = self.client.gather(futures[-len(totals):])
        out, at = {}, 0
        for (name, _), group, total in zip(jobs.items(), new, sums):
            out[name] = (futures[at:at + len(group)], total)
            at += len(group)
        return out

    def _hyper(self, name: str, state: RunState) -> ck.Hyper:
        """The modality's :class:`fastjmt.chunks.Hyper` with this epoch's step for its cell logits (``Z_<name>``,
        whose step count the caller has just advanced)."""
        st, s = state.stepper, self.sched
        return replace(self.hyper[name], lr=st.lr, step=st.steps["Z_" + name], adam=s.optimizer == "adam",
                       beta1=s.beta1, beta2=s.beta2, eps=s.eps)

    # -- the engine's interface
    def epoch(self, state: RunState, it: int) -> dict:
        """One full-batch epoch, as :func:`fastjmt.driver._epoch`; both modalities' chunks go in each round trip
        (a modality's cell step does not read the other modality), three round trips in all."""
        if self.sched.batch_cells < 1.0 or self.sched.batch_features < 1.0:
            return self._batch_epoch(state, it)
        P, step, problem = state.params, state.stepper, self.problem
        chunks = dict(state.chunks)
        sv, h = {}, {}
        for name in MODALITIES:
            f = P[name]
            sv[name] = obj.side_stats(f.Cf, f.c)
            step.steps["Z_" + name] += 1
            h[name] = self._hyper(name, state)
        done = self._map(ck.cell_step, {m: (chunks[m], (h[m], P[m].Cf, sv[m], P[m].S)) for m in MODALITIES})
        for name in MODALITIES:
            chunks[name] = done[name][0]
        self._step_associations(P, step, {m: done[m][1] for m in MODALITIES}, it)
        done = self._map(ck.cell_biases, {m: (chunks[m], (h[m], P[m].S, sv[m])) for m in MODALITIES})
        cell_side, XtU = {}, {}
        for name in MODALITIES:
            f, mod = P[name], problem.modality(name)
            chunks[name], parts = done[name]
            cell_side[name], XtU[name] = parts["su"], parts["XtU"].astype(f.Cf.dtype)
            f.c[:] = obj.closed_form_bias(mod.col_sums, f.Cf, cell_side[name], mod.n)
        for name in MODALITIES:
            f, mod = P[name], problem.modality(name)
            bs = obj.BatchStats(None, np.arange(mod.p, dtype=np.int64), None, mod.col_sums, mod.sq_norm,
                                obj.recon_coef(mod.weight, mod.n, mod.p), 1.0)
            V = step.logits("Zf_" + name, f.Zf, bs.cols, f.Cf,
                            obj.feature_grad(problem, name, P, bs, XtU[name], f.Cf, cell_side[name], f.c))
            _check_finite(V, "Zf_" + name, it)
            f.Cf[:] = V
            f.c[:] = obj.closed_form_bias(mod.col_sums, f.Cf, cell_side[name], mod.n)
        parts = self._refit_all(P, chunks, feature_biases=False)  # features first: c above, now b
        state.chunks = chunks
        return self._terms(P, parts, {m: obj.frob(P[m].Cf, XtU[m]) for m in MODALITIES})

    def _batch_epoch(self, state: RunState, it: int) -> dict:
        """One mini-batch epoch, as :func:`fastjmt.driver._epoch` with a batch: the paper's sampling at the
        granularity of row chunks (a share ``batch_cells`` of the chunks, all their cells) and of features
        (``batch_features``), drawn in the in-memory order; the biases refitted over every cell (no pass over
        the data), and the loss over all of them (one pass)."""
        from .driver import draw

        P, step, problem, sched = state.params, state.stepper, self.problem, self.sched
        chunks = dict(state.chunks)
        picked, cols, mask, h, sv = {}, {}, {}, {}, {}
        for name in MODALITIES:  # the in-memory draw order: each modality's rows, then its features
            mod = problem.modality(name)
            picked[name] = draw(len(chunks[name]), sched.batch_cells, state.rng)
            cols[name] = draw(mod.p, sched.batch_features, state.rng)
            mask[name] = np.zeros(mod.p, np.uint8)
            mask[name][cols[name]] = 1
            f = P[name]
            sv[name] = obj.side_stats(np.ascontiguousarray(f.Cf[cols[name]]), np.ascontiguousarray(f.c[cols[name]]))
            step.steps["Z_" + name] += 1
            h[name] = replace(self._hyper(name, state),
                              batch_cells=int(sum(self.hyper[name].rows[i] for i in picked[name])),
                              batch_features=int(cols[name].size))
        done = self._map(ck.cell_step, {m: ([chunks[m][i] for i in picked[m]],
                                            (h[m], P[m].Cf, sv[m], P[m].S, mask[m]), picked[m]) for m in MODALITIES})
        for name in MODALITIES:
            chunks[name] = _put(chunks[name], picked[name], done[name][0])
        self._step_associations(P, step, {m: done[m][1] for m in MODALITIES}, it)
        done = self._refit_all(P, chunks, feature_biases=True)  # objective.refit_biases, cells first: b, then c
        cell_side = {m: done[m]["su"] for m in MODALITIES}
        done = self._map(ck.batch_features, {m: ([chunks[m][i] for i in picked[m]],
                                                 (h[m], P[m].S, cols[m], mask[m]), picked[m]) for m in MODALITIES})
        for name in MODALITIES:
            f, mod, J = P[name], problem.modality(name), cols[name]
            parts = done[name][1]
            bs = obj.BatchStats(None, J, None, None, 0.0, h[name].coef, obj.feature_scale(mod.p, J.size))
            V_J = np.ascontiguousarray(f.Cf[J])
            V_J = step.logits("Zf_" + name, f.Zf, J, V_J,
                              obj.feature_grad(problem, name, P, bs, parts["XtU"].astype(f.Cf.dtype), V_J,
                                               parts["su"], np.ascontiguousarray(f.c[J])))
            _check_finite(V_J, "Zf_" + name, it)
            f.Cf[J] = V_J
            # objective.refit_biases, features first: c over every cell (b and C S unchanged since cell_side)
            f.c[:] = obj.closed_form_bias(mod.col_sums, f.Cf, cell_side[name], mod.n)
        self._refit_all(P, chunks, feature_biases=False)
        state.chunks = chunks
        return self.loss(P, chunks)

    def _step_associations(self, P: dict, step, recon_parts: dict, it: int) -> None:
        """The S steps after the cell steps, ATAC then RNA as in memory: ``dL/dS`` is the chunks' summed
        reconstruction part plus the coupling (:func:`fastjmt.objective.association_grad`'s two parts)."""
        for name, other in (("atac", "rna"), ("rna", "atac")):
            f = P[name]
            gS = recon_parts[name] + obj.association_coupling_grad(self.problem, f.S, P[other].S)
            step("S_" + name, f.S, gS, np.arange(f.S.shape[0], dtype=np.int64))
            _check_finite(f.S, "S_" + name, it)

    def _refit_all(self, P: dict, chunks: dict, feature_biases: bool) -> dict:
        """The cell biases of every chunk in closed form given ``side_stats(Cf, c)`` (states only, no data), then,
        with ``feature_biases``, the feature biases given the cells' new side stats
        (:func:`fastjmt.objective.refit_biases`); updates ``chunks`` and returns the chunks' summed parts per
        modality (side stats, ``⟨b, X1⟩``, mask and entropy sums)."""
        sv = {m: obj.side_stats(P[m].Cf, P[m].c) for m in MODALITIES}
        done = self._map(ck.refit_after_features, {m: (chunks[m], (self.hyper[m], P[m].S, sv[m])) for m in MODALITIES},
                         with_data=False)
        parts = {}
        for m in MODALITIES:
            chunks[m], parts[m] = done[m]
            if feature_biases:
                mod = self.problem.modality(m)
                P[m].c[:] = obj.closed_form_bias(mod.col_sums, P[m].Cf, parts[m]["su"], mod.n)
        return parts

    def _terms(self, P: dict, parts: dict, bilinear: dict) -> dict:
        """Every term of the objective from the chunks' summed parts (:meth:`_refit_all`'s or
        ``chunks.evaluate``'s) and ``bilinear = ⟨C S, X Cf⟩`` per modality."""
        recon, cell_terms = {}, {"mask": 0.0, "entropy": 0.0}
        for name in MODALITIES:
            f, mod, pt = P[name], self.problem.modality(name), parts[name]
            recon[name] = mod.weight * obj.recon_value_of_sums(
                mod.sq_norm, bilinear[name], pt["b_dot_rows"], obj.bias_dot(f.c, mod.col_sums), mod.n, mod.p,
                pt["su"], obj.side_stats(f.Cf, f.c))
            cell_terms["mask"] += pt["mask"] / mod.n
            cell_terms["entropy"] += pt["entropy"] / mod.n
        return obj.complete_terms(self.problem, P, recon, cell_terms)

    def save(self, state: RunState) -> _SavePoint:
        return _SavePoint(state)

    def snapshot(self, state: RunState, loss: float) -> Snapshot:
        P = state.params
        labels = [None, None] + [np.argmax(P[m].Cf, axis=1).astype(np.int32) for m in ("rna", "atac")]
        return Snapshot(labels, [P[m].S.astype(np.float64) for m in ("rna", "atac")], loss)

    def measure(self, state: RunState, loss: float) -> tuple:
        done = self._map(ck.relabel, {m: (state.chunks[m], ()) for m in ("rna", "atac")}, with_data=False)
        shares = [done[m][1] / self.problem.modality(m).n for m in ("rna", "atac")]
        state.chunks = {m: done[m][0] for m in MODALITIES}
        now = self.snapshot(state, loss)
        change = now.change(state.snapshot, state.kept, cell_shares=shares)
        return now, change, max(shares)

    def loss(self, params: dict, chunks: dict) -> dict:
        """Every term of the objective at the current point (one pass over each modality's nonzeros)."""
        done = self._map(ck.evaluate, {m: (chunks[m], (self.hyper[m], params[m].Cf, params[m].S)) for m in MODALITIES})
        parts = {m: done[m][1] for m in MODALITIES}
        return self._terms(params, parts, {m: parts[m]["bilinear"] for m in MODALITIES})


def _put(states: list, index, new: list) -> list:
    """``states`` with the entries at ``index`` replaced by ``new``."""
    out = list(states)
    for i, st in zip(index, new):
        out[i] = st
    return out


# --------------------------------------------------------------------------- preparing the chunks


def _compute(client, tasks):
    return client.gather(client.compute(tasks, optimize_graph=False))


def _prepare(client, X, name: str, opts, threads: dict):
    """The prepared chunks of one modality (Delayed, or futures with ``persist``), the preprocessing
    constants and the modality's sums."""
    from dask import delayed

    blocks = list(X.to_delayed().ravel())
    raw = _compute(client, [delayed(_run, pure=True)(threads, ck.raw_stats, b, name) for b in blocks])
    if not all(r["finite"] for r in raw):
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them before fitting")
    if any(r["negative"] for r in raw) and opts.preprocess:
        raise ValueError(f"{name} has negative values; pass raw counts, or preprocess=False for data you prepared")
    n_cells = sum(r["lib"].size for r in raw)
    if not any(r["nnz"] for r in raw):
        raise ValueError(f"{name} has no nonzero value; check that the right matrix (or layer) was passed")
    if n_cells < opts.K:
        raise ValueError(f"{name} has {n_cells} cells, fewer than the {opts.K} clusters asked for")
    constants = {}
    if name == "rna" and opts.preprocess:
        lib = np.concatenate([r["lib"] for r in raw])
        row_max = np.concatenate([r["row_max"] for r in raw])
        constants = pp.rna_constants_of(lib, row_max)
    data = [delayed(_run, pure=True)(threads, ck.prepare, b, name, np.dtype(opts.dtype), opts.preprocess, constants)
            for b in blocks]
    if opts.persist:
        data = client.persist(data, optimize_graph=False)
    stats = _compute(client, [delayed(_run, pure=True)(threads, ck.prepared_sums, d) for d in data])
    sums = {"col_sums": ck.sum_parts([s["col_sums"] for s in stats]), "sq_norm": sum(s["sq_norm"] for s in stats),
            "n_rows": [s["n"] for s in stats], "nnz": sum(s["nnz"] for s in stats)}
    return data, constants, sums


def _sample(client, data, n_rows: list, size: int, rng) -> tuple:
    """Rows of the start's sample (sorted global indices; all rows when there are at most ``size``) and their
    prepared data as one CSR matrix."""
    from dask import delayed

    n = sum(n_rows)
    rows = np.arange(n, dtype=np.int64) if n <= size else np.sort(rng.choice(n, size=size, replace=False))
    offsets = np.concatenate([[0], np.cumsum(n_rows)])
    local = [rows[(rows >= offsets[i]) & (rows < offsets[i + 1])] - offsets[i] for i in range(len(n_rows))]
    parts = _compute(client, [delayed(ck.select_rows, pure=True)(d, r) for d, r in zip(data, local)])
    return rows, local, sp.vstack(parts, format="csr")


# --------------------------------------------------------------------------- the fit


def check_inputs(rna, atac, gene_activity, opts) -> None:
    """Every check of a Dask fit's inputs and options that needs no pass over the data; before any work."""
    from .validation import check_matrix

    check_dask_matrix(rna, "rna")
    check_dask_matrix(atac, "atac")
    if is_dask(gene_activity):
        raise TypeError("gene_activity must be in memory (genes × regions, a scipy sparse matrix or array); "
                        "pass gene_activity.compute()")
    check_matrix(gene_activity, "gene_activity", require_nonzero=True)
    if opts.out is not None and os.path.exists(opts.out) and not os.path.isdir(opts.out):
        raise FileExistsError(f"out: {os.fspath(opts.out)!r} is a file; pass a zarr store path (a folder, new or "
                              "one to overwrite)")
    n_genes, n_regions = rna.shape[1], atac.shape[1]
    if tuple(gene_activity.shape) != (n_genes, n_regions):
        raise ValueError(f"gene_activity has shape {gene_activity.shape}; expected (n_genes, n_regions) = "
                         f"({n_genes}, {n_regions}) from rna and atac")
    for name, X in (("rna", rna), ("atac", atac)):
        if X.shape[0] < opts.K:
            raise ValueError(f"{name} has {X.shape[0]} cells, fewer than the {opts.K} clusters asked for")


@dataclass
class DaskRun:
    """What a Dask fit hands back to :func:`fastjmt.fit`: the kept restart (its params hold the feature-sized
    factors; cells are in ``cells``), the per-cell outputs, the column merge, the RNA preprocessing constants."""

    outcome: FitOutcome
    cells: dict  # per modality: C, programs, b, empty (Dask arrays, or NumPy, see _outputs)
    column_clusters: object
    rna_constants: dict


def fit(rna, atac, A: sp.csr_matrix, opts, seeds: list, fingerprint_options: dict, should_stop=None) -> DaskRun:
    """Fit on Dask arrays ``rna`` and ``atac`` (checked by :func:`check_inputs`) with the prepared gene
    activity ``A``; ``opts`` are :func:`fastjmt.fit`'s checked options (``client``, ``persist``, ``out``,
    ``start_cells`` among them), ``seeds`` the restarts' seeds; ``should_stop()`` is asked after every epoch
    (Ctrl-C)."""
    client, own = _client(opts.client)
    try:
        with client.as_current():  # every computation of the fit (dask.compute too) on this client
            return _fit(client, own, rna, atac, A, opts, seeds, fingerprint_options, should_stop)
    finally:
        if own:
            client.close()
            client.cluster.close()


def _fit(client, own: bool, rna, atac, A: sp.csr_matrix, opts, seeds, fingerprint_options, should_stop) -> DaskRun:
    """The fit, on ``client`` (see :func:`fit`)."""
    from . import checkpoint as ckpt

    threads = task_threads(client, opts.n_threads)
    prepared = {name: _prepare(client, X, name, opts, threads) for name, X in (("rna", rna), ("atac", atac))}
    data = {m: prepared[m][0] for m in MODALITIES}
    sums = {m: prepared[m][2] for m in MODALITIES}
    masked = masked_columns(*opts.layout)
    At = transpose(A)
    mods = {m: Modality(None, None, sum(sums[m]["n_rows"]), (rna if m == "rna" else atac).shape[1], None,
                        sums[m]["col_sums"], sums[m]["sq_norm"], opts.weights[WEIGHT_OF[m]], masked[m])
            for m in MODALITIES}
    problem = Problem(mods["atac"], mods["rna"], (A.indptr, A.indices, A.data),
                      (At.indptr, At.indices, At.data), A.shape[0], A.shape[1], opts.K, opts.a3, opts.a4,
                      opts.a5, opts.a6, np.dtype(opts.dtype))
    hyper = {m: ck.Hyper(mods[m].weight, opts.a5, opts.a6, mods[m].n, mods[m].p, masked[m],
                         rows=tuple(sums[m]["n_rows"])) for m in MODALITIES}
    sched = schedule_of(opts)
    engine = Chunked(client, problem, sched, data, hyper, threads, opts, sums, A)
    fingerprint = ckpt.fingerprint_of(
        [list(rna.shape), list(atac.shape), list(A.shape)], [sums["rna"]["nnz"], sums["atac"]["nnz"], int(A.nnz)],
        [mods["rna"].sq_norm, mods["atac"].sq_norm, float(mods["rna"].col_sums.sum()),
         float(mods["atac"].col_sums.sum())], opts.layout, opts.weights, opts.dtype,
        dict(fingerprint_options, row_chunks=[list(hyper["rna"].rows), list(hyper["atac"].rows)]), seeds)
    outcome = fit_restarts(problem, sched, opts.layout, seeds, fingerprint, checkpoint=opts.checkpoint,
                           checkpoint_every=opts.checkpoint_every, resume=opts.resume, should_stop=should_stop,
                           engine=engine)
    best = outcome.best  # a RunOutcome: its params; the chunk states are the kept restart's
    cells = _outputs(engine, best.chunks, best.params, opts)
    clusters = _column_clusters(cells, opts)
    if own and opts.out is None:  # the cluster closes with the fit: the per-cell outputs come home
        import dask

        for m in MODALITIES:
            cells[m] = dict(zip(cells[m], dask.compute(*cells[m].values())))
    return DaskRun(outcome, cells, clusters, prepared["rna"][1])


def _start(engine: Chunked, problem: Problem, opts, sched: Schedule, seed: int, sums: dict, A) -> RunState:
    """A restart's start: the in-memory start on a sample of each modality's cells (all of them when there are
    at most ``start_cells``), its feature factors and S for every chunk, the sample's cell logits for the
    sample's cells, the nearest column centroid of program activities for the others."""
    from dask import delayed

    t0 = time.perf_counter()
    client = engine.client
    sample_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    samples = {m: _sample(client, engine.data[m], sums[m]["n_rows"], opts.start_cells, sample_rng)
               for m in MODALITIES}
    sub = build_problem(samples["rna"][2], samples["atac"][2], A, *opts.layout, opts.weights, opts.dtype,
                        opts.low_memory)
    rng = np.random.default_rng(seed)
    start = initialize(sub, *opts.layout, sched.init, rng, sched.init_scale)
    params, chunks = {}, {}
    for m in MODALITIES:
        f, rows, local = start[m], samples[m][0], samples[m][1]
        K = f.S.shape[0]
        empty = np.zeros((0, K), dtype=f.Z.dtype)
        params[m] = Factors(empty, empty.copy(), f.Zf, f.Cf, f.S, np.zeros(0, f.b.dtype), f.c)
        n_rows = sums[m]["n_rows"]
        offsets = np.concatenate([[0], np.cumsum(n_rows)])
        if rows.size == offsets[-1]:  # the start saw every cell: its logits and biases, chunk by chunk
            tasks = [delayed(_run, pure=False)(engine.threads, ck.given_start, d, f.Z[offsets[i]:offsets[i + 1]],
                                               f.b[offsets[i]:offsets[i + 1]])
                     for i, d in enumerate(engine.data[m])]
        else:
            allowed = np.setdiff1d(np.arange(K), problem.modality(m).masked_cols)
            centroids = start_centroids(obj.program_activity(sub.modality(m), f.Cf), f.C, allowed)
            pos = np.searchsorted(rows, offsets[:-1])
            Cf = delayed(f.Cf, pure=True)  # one copy in the graph, not one per task
            tasks = [delayed(_run, pure=False)(engine.threads, ck.start, d, engine.hyper[m], local[i],
                                               f.Z[pos[i]:pos[i] + local[i].size], centroids, Cf, f.c, f.S,
                                               np.dtype(opts.dtype))
                     for i, d in enumerate(engine.data[m])]
        chunks[m] = client.compute(tasks, optimize_graph=False)
    terms = engine.loss(params, chunks)
    total = terms["total"]
    state = RunState(seed, params, _Stepper(sched, params), rng, [[terms[t] for t in obj.TERMS] + [total]],
                     prev=total, chunks=chunks)
    if sched.stop == "answer":
        state.snapshot = engine.snapshot(state, total)
    state.seconds = time.perf_counter() - t0
    return state


def _outputs(engine: Chunked, chunks: dict, P: dict, opts) -> dict:
    """Per modality the per-cell outputs (``C`` with empty rows uniform, ``programs``, ``b``, ``empty``) as
    Dask arrays over futures on the cluster, or over the ``out`` zarr store once written there."""
    import dask.array as da
    from dask import delayed

    client, K = engine.client, opts.K
    cells = {}
    for m in MODALITIES:
        outs = client.compute([delayed(_run, pure=False)(engine.threads, ck.outputs, d, st, engine.hyper[m], P[m].Cf)
                               for d, st in zip(engine.data[m], chunks[m])], optimize_graph=False)
        rows = engine.hyper[m].rows
        dt = P[m].Cf.dtype
        fields = {"C": ((K,), dt), "programs": ((K,), dt), "b": ((), dt), "empty": ((), bool)}
        cells[m] = {key: da.concatenate([da.from_delayed(delayed(operator.getitem)(o, key), shape=(r,) + tail,
                                                         dtype=t) for o, r in zip(outs, rows)])
                    for key, (tail, t) in fields.items()}
    if opts.out is not None:
        store = os.fspath(opts.out)
        for m in MODALITIES:
            for key, arr in cells[m].items():
                da.to_zarr(arr, store, component=f"{key}_{m}", overwrite=True)
            cells[m] = {key: da.from_zarr(store, component=f"{key}_{m}") for key in cells[m]}
    return cells


def _column_clusters(cells: dict, opts):
    """The column merge (:func:`fastjmt.merge_columns`) on up to ``start_cells`` cells per modality with data
    (all of them when there are no more): it decides per column, so a sample of the cells is enough."""
    if opts.resolution is None:
        return None
    from .clustering import merge_columns

    sample = {}
    for m in MODALITIES:
        n = cells[m]["b"].shape[0]
        rows = np.arange(n) if n <= opts.start_cells else \
            np.sort(np.random.default_rng(0).choice(n, opts.start_cells, replace=False))
        prog, C, empty = (np.asarray(cells[m][k][rows]) for k in ("programs", "C", "empty"))
        sample[m] = (prog[~empty], C[~empty].argmax(axis=1))
    return merge_columns(sample["rna"][0], sample["atac"][0], sample["rna"][1], sample["atac"][1], *opts.layout,
                         resolution=opts.resolution)

"""Checkpoints of a fit: written atomically, read back without pickle.

A checkpoint is one ``.npz`` file. Its ``meta`` entry is a JSON string (the
restart number, the seeds, the optimiser step counts, the random generator's
state, convergence counters, and a fingerprint of the data and options); every
other entry is a plain array (the factors, the Adam moments, the loss history)
of the restart under way and of the best finished restart so far.

Writing goes to a temporary file in the same folder, flushed to disk, then
renamed over the old checkpoint (``os.replace``, atomic on POSIX and Windows):
a process killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .errors import CheckpointError
from .problem import MODALITIES, Factors

FORMAT_VERSION = 2
_FIELDS = ("Z", "C", "Zf", "Cf", "S", "b", "c")


def _pack_params(params: dict, prefix: str, out: dict):
    for m in MODALITIES:
        for f in _FIELDS:
            out[f"{prefix}/{m}/{f}"] = getattr(params[m], f)


def _unpack_params(arrays, prefix: str) -> dict:
    return {m: Factors(*(np.array(arrays[f"{prefix}/{m}/{f}"]) for f in _FIELDS)) for m in MODALITIES}


def pack_run(state, prefix: str, arrays: dict) -> dict:
    """Arrays of a :class:`~fastjmt.driver.RunState` into ``arrays``; returns its JSON-able scalars."""
    _pack_params(state.params, prefix, arrays)
    arrays[f"{prefix}/history"] = np.asarray(state.history, dtype=np.float64)
    if state.snapshot is not None:
        for i, lab in enumerate(state.snapshot.labels):
            arrays[f"{prefix}/snapshot/labels{i}"] = lab
        for i, S in enumerate(state.snapshot.S):
            arrays[f"{prefix}/snapshot/S{i}"] = S
    for key, (M, V) in state.stepper.state.items():
        arrays[f"{prefix}/adam/{key}/M"] = M
        arrays[f"{prefix}/adam/{key}/V"] = V
    return {
        "seed": int(state.seed),
        "it": int(state.it),
        "calm": int(state.calm),
        "undone": int(state.undone),
        "lr": float(state.stepper.lr),
        "lr_max": float(state.stepper.lr_max),
        "prev": float(state.prev),
        "converged": bool(state.converged),
        "stopped": bool(state.stopped),
        "interrupted": bool(state.interrupted),
        "seconds": float(state.seconds),
        "steps": {k: int(v) for k, v in state.stepper.steps.items()},
        "snapshot_loss": None if state.snapshot is None else float(state.snapshot.loss),
        "kept": int(state.kept),
        "change": [float(x) for x in state.change],
        "stop_reason": state.stop_reason,
        "rng": state.rng.bit_generator.state,
    }


def unpack_run(meta: dict, arrays, prefix: str, sched):
    """A :class:`~fastjmt.driver.RunState` back from :func:`pack_run`'s output."""
    from .driver import RunState, Snapshot, _Stepper

    params = _unpack_params(arrays, prefix)
    stepper = _Stepper(sched, params)
    for key in stepper.state:
        stepper.state[key] = (np.array(arrays[f"{prefix}/adam/{key}/M"]), np.array(arrays[f"{prefix}/adam/{key}/V"]))
    stepper.steps = dict(meta["steps"])
    stepper.lr = float(meta["lr"])
    stepper.lr_max = float(meta.get("lr_max", sched.learning_rate))
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    history = [list(row) for row in np.asarray(arrays[f"{prefix}/history"])]
    snapshot = None
    if meta.get("snapshot_loss") is not None:  # checkpoints of the stop="answer" rule
        snapshot = Snapshot([np.array(arrays[f"{prefix}/snapshot/labels{i}"]) for i in range(4)],
                            [np.array(arrays[f"{prefix}/snapshot/S{i}"]) for i in range(2)], meta["snapshot_loss"])
    return RunState(meta["seed"], params, stepper, rng, history, it=meta["it"], calm=meta["calm"],
                    undone=meta["undone"], prev=meta["prev"], converged=meta["converged"], stopped=meta["stopped"],
                    interrupted=meta["interrupted"], seconds=meta["seconds"], snapshot=snapshot,
                    kept=int(meta.get("kept", 0)), change=tuple(meta.get("change", ())),
                    stop_reason=meta.get("stop_reason", ""))


def save(path: str, meta: dict, arrays: dict) -> None:
    """Write ``meta`` (JSON-able) and ``arrays`` to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(dict(meta, format=FORMAT_VERSION))), **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path: str):
    """``(meta, arrays)`` of a checkpoint; arrays are loaded eagerly, pickle refused."""
    meta = read_meta(path)
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return meta, arrays


def read_meta(path: str) -> dict:
    """Only the JSON part of a checkpoint (the arrays are not read)."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from exc


def check_fingerprint(meta: dict, fingerprint: dict, path: str) -> None:
    """Refuse to resume from a checkpoint made for other data or options."""
    stored = meta.get("fingerprint", {})
    diff = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
    if diff:
        raise CheckpointError(
            f"checkpoint {path!r} was made for other data or options (differs in: {', '.join(diff)}); "
            "resume with the same inputs, layout, weights, optimiser settings, random_state and n_init"
        )

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

FORMAT_VERSION = 2


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


def fingerprint(matrices, problem, layout, weights: dict, dtype, options: dict, seeds: list) -> dict:
    """What a checkpoint must match to be resumed: the prepared inputs' shapes, nonzeros and sums, the layout,
    the weights and the options that change the fit, and the restarts' seeds (JSON-able)."""
    return fingerprint_of([list(M.shape) for M in matrices], [int(M.nnz) for M in matrices],
                          [problem.rna.sq_norm, problem.atac.sq_norm, float(problem.rna.row_sums.sum()),
                           float(problem.atac.row_sums.sum())], layout, weights, dtype, options, seeds)


def fingerprint_of(shapes: list, nnz: list, sums: list, layout, weights: dict, dtype, options: dict,
                   seeds: list) -> dict:
    """:func:`fingerprint` from the inputs' shapes, nonzeros and sums (``|G|²``, ``|R|²``, ``Σ G``, ``Σ R`` of
    the prepared data), e.g. summed over the row chunks of Dask arrays."""
    return json.loads(json.dumps({
        "shapes": shapes,
        "nnz": nnz,
        "sums": sums,
        "layout": list(layout),
        "dtype": np.dtype(dtype).name,
        "weights": weights,
        **options,
        "seeds": seeds,
    }))


def digest(matrices) -> str:
    """A hash of the prepared matrices' CSR arrays (BLAKE2b, 128 bits): the same cells in another row order, the
    features in another order or other values give another digest. Read only when a fit writes or resumes a
    checkpoint (about 1 s per GB of CSR)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for M in matrices:
        h.update(np.asarray(M.shape, dtype=np.int64).tobytes())
        for arr in (M.indptr, M.indices, M.data):
            h.update(np.ascontiguousarray(arr).view(np.uint8))
    return h.hexdigest()


def check_fingerprint(meta: dict, fingerprint: dict, path: str) -> None:
    """Refuse to resume from a checkpoint made for other data or options."""
    stored = meta.get("fingerprint", {})
    kinds = {"fit": "fastjmt.fit", "fit_mosaic": "fastjmt.fit_mosaic"}
    mine, theirs = fingerprint.get("kind", "fit"), stored.get("kind", "fit")
    if mine != theirs:
        raise CheckpointError(f"checkpoint {path!r} was written by {kinds.get(theirs, theirs)}; resume it with "
                              f"{kinds.get(theirs, theirs)}, not {kinds.get(mine, mine)}")
    diff = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
    if diff:
        raise CheckpointError(
            f"checkpoint {path!r} was made for other data or options (differs in: {', '.join(diff)}); "
            "resume with the same inputs, layout, weights, optimiser settings, random_state and n_init"
        )

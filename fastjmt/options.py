"""The options of a fit: every default once, and the checks of every value.

:func:`fastjmt.fit`'s signature, the command line and any estimator read their
defaults from :data:`DEFAULTS`; :func:`check_options` is the one place that
decides whether an option's value is valid, before any work.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Optional, Union

import numpy as np

from .validation import check_count, check_fraction, check_layout, check_positive


@dataclass(frozen=True)
class FitOptions:
    """Every keyword option of :func:`fastjmt.fit` with its default (see there for their meaning).

    Where each default comes from: the term weights and the step size were
    measured on the simulator and the shared datasets (docs/model.md, *Defaults*);
    the stopping rule's tolerances likewise (docs/model.md, *Stopping*);
    ``resolution`` is modularity's own scale (docs/quality.md).
    """

    n_shared: Optional[int] = None
    n_rna_only: int = 0
    n_atac_only: int = 0
    a1: float = 1000.0
    a2: float = 1000.0
    a3: float = 10.0
    a4: float = 10.0
    a5: float = 100.0
    a6: float = 10.0
    max_iter: int = 300
    tol: Optional[float] = None
    patience: int = 5
    stop: str = "answer"
    window: int = 5
    label_tol: float = 1e-3
    S_tol: float = 1e-2
    step_decay: float = 0.5
    learning_rate: float = 0.1
    backtrack: bool = True
    optimizer: str = "adam"
    batch_cells: float = 1.0
    batch_features: float = 1.0
    init: str = "joint"
    init_scale: float = 2.0
    n_init: int = 1
    random_state: Union[None, int, np.random.SeedSequence, np.random.Generator] = 0
    n_threads: Optional[int] = None
    dtype: Any = np.float32
    preprocess: bool = True
    verbose: int = 0
    callback: Optional[Callable[[int, dict, dict], Any]] = None
    checkpoint: Union[None, str, os.PathLike] = None
    checkpoint_every: int = 10
    resume: Union[None, str, os.PathLike] = None
    low_memory: bool = False
    resolution: Optional[float] = 1.0
    client: Any = None
    persist: bool = False
    out: Union[None, str, os.PathLike] = None
    start_cells: int = 20_000

    @property
    def layout(self) -> tuple:
        return self.n_shared, self.n_rna_only, self.n_atac_only

    @property
    def K(self) -> int:
        return self.n_shared + self.n_rna_only + self.n_atac_only

    @property
    def weights(self) -> dict:
        return {k: getattr(self, k) for k in WEIGHT_NAMES}

    @classmethod
    def names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))


#: every default, in one place
DEFAULTS = FitOptions()

WEIGHT_NAMES = ("a1", "a2", "a3", "a4", "a5", "a6")

#: Default term weights a1…a6 (see docs/model.md for how they were chosen).
DEFAULT_WEIGHTS = {k: getattr(DEFAULTS, k) for k in WEIGHT_NAMES}

#: Default ``tol`` of each stopping rule (see docs/model.md for the measurements behind them).
DEFAULT_TOL = {"answer": 1e-4, "loss": 1e-5}


def check_options(opts: FitOptions) -> FitOptions:
    """``opts`` with every value checked and normalised (``dtype`` a NumPy dtype, ``tol`` resolved, counts int).

    Raises
    ------
    ValueError, TypeError
        Naming the option, the value given and what it must be.
    FileNotFoundError
        ``resume`` names no file, or ``checkpoint``'s folder does not exist.
    """
    try:
        dtype = np.dtype(opts.dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {opts.dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    for name in ("preprocess", "low_memory", "backtrack", "persist"):
        if not isinstance(getattr(opts, name), (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {getattr(opts, name)!r}")
    verbose = opts.verbose
    verbose = check_count(int(verbose) if isinstance(verbose, (bool, np.bool_)) else verbose, "verbose", 0)
    n_shared, n_rna_only, n_atac_only = check_layout(*opts.layout)
    weights = {k: check_positive(getattr(opts, k), k, allow_zero=True) for k in WEIGHT_NAMES}
    if opts.stop not in ("answer", "loss"):
        raise ValueError(f"stop must be 'answer' or 'loss', got {opts.stop!r}")
    if opts.optimizer not in ("adam", "gd"):
        raise ValueError(f"optimizer must be 'adam' or 'gd', got {opts.optimizer!r}")
    if opts.init not in ("joint", "spectral", "random"):
        raise ValueError(f"init must be 'joint', 'spectral' or 'random', got {opts.init!r}")
    if opts.callback is not None and not callable(opts.callback):
        raise TypeError("callback must be callable")
    if opts.client is not None and not (hasattr(opts.client, "compute") and hasattr(opts.client, "scheduler_info")):
        raise TypeError(f"client must be a dask.distributed.Client or None, got {type(opts.client).__name__}")
    for name in ("checkpoint", "resume", "out"):
        value = getattr(opts, name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path, got {value!r}")
    if opts.resume is not None and not os.path.isfile(opts.resume):
        raise FileNotFoundError(f"resume: no checkpoint at {os.fspath(opts.resume)!r}")
    if opts.checkpoint is not None and not os.path.isdir(os.path.dirname(os.path.abspath(opts.checkpoint))):
        raise FileNotFoundError(f"checkpoint: the folder of {os.fspath(opts.checkpoint)!r} does not exist")
    restart_seeds(opts.random_state, 1)  # validates random_state
    return replace(
        opts, dtype=dtype, verbose=verbose, n_shared=n_shared, n_rna_only=n_rna_only, n_atac_only=n_atac_only,
        **weights,
        max_iter=check_count(opts.max_iter, "max_iter", 1),
        patience=check_count(opts.patience, "patience", 1),
        window=check_count(opts.window, "window", 1),
        n_init=check_count(opts.n_init, "n_init", 1),
        tol=DEFAULT_TOL[opts.stop] if opts.tol is None else check_positive(opts.tol, "tol", allow_zero=True),
        label_tol=_share(opts.label_tol, "label_tol"),
        S_tol=check_positive(opts.S_tol, "S_tol", allow_zero=True),
        step_decay=check_fraction(opts.step_decay, "step_decay"),
        learning_rate=check_positive(opts.learning_rate, "learning_rate"),
        init_scale=check_positive(opts.init_scale, "init_scale", allow_zero=True),
        batch_cells=check_fraction(opts.batch_cells, "batch_cells"),
        batch_features=check_fraction(opts.batch_features, "batch_features"),
        resolution=None if opts.resolution is None else check_positive(opts.resolution, "resolution"),
        checkpoint_every=check_count(opts.checkpoint_every, "checkpoint_every", 0),
        preprocess=bool(opts.preprocess), low_memory=bool(opts.low_memory), backtrack=bool(opts.backtrack),
        persist=bool(opts.persist), start_cells=check_count(opts.start_cells, "start_cells", 1),
    )


def restart_seeds(random_state, n_init: int) -> list:
    """One integer seed per restart.

    An integer ``random_state`` is the first restart's seed itself, so that
    ``fit(..., random_state=result.seed, n_init=1)`` reruns the kept restart;
    the other restarts' seeds are drawn from it.
    """
    if isinstance(random_state, np.random.Generator):
        random_state = int(random_state.integers(2**32))
    if random_state is not None and not isinstance(random_state, (numbers.Integral, np.random.SeedSequence)) \
            or isinstance(random_state, bool):
        raise TypeError(f"random_state must be None, an int, a SeedSequence or a Generator, got {random_state!r}")
    if isinstance(random_state, numbers.Integral) and random_state < 0:
        raise ValueError(f"random_state must be >= 0, got {random_state}")
    seq = random_state if isinstance(random_state, np.random.SeedSequence) else np.random.SeedSequence(random_state)
    seeds = [int(x) for x in seq.generate_state(n_init, dtype=np.uint32)]
    if isinstance(random_state, numbers.Integral):
        seeds[0] = int(random_state)
    return seeds


def _share(value, name: str) -> float:
    """A share in [0, 1]."""
    value = check_positive(value, name, allow_zero=True)
    if value > 1:
        raise ValueError(f"{name} is a share of cells and features, in [0, 1]; got {value}")
    return value

"""Public API: :func:`fit` and its result, :class:`JMTResult`.

This is the only layer that knows about scipy matrices and the user's types;
it validates, converts, preprocesses and hands raw arrays to the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import numbers
import os
import signal
import threading
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
import scipy.sparse as sp

from . import checkpoint as ckpt
from . import preprocess as pp
from ._threads import fit_threads, resolve_n_threads
from .driver import Schedule, fit_restarts
from .errors import ConvergenceWarning
from .objective import TERMS
from .problem import Modality, build_problem
from .products import spmm_all
from .validation import check_count, check_fraction, check_inputs, check_layout, check_positive, not_counts

logger = logging.getLogger("fastjmt")

__all__ = ["fit", "JMTResult", "ConvergenceWarning", "DEFAULT_WEIGHTS", "load_result"]

#: Default term weights a1…a5 (see docs/model.md for how they were chosen).
DEFAULT_WEIGHTS = {"a1": 1000.0, "a2": 1000.0, "a3": 10.0, "a4": 10.0, "a5": 100.0, "a6": 10.0}

#: Default ``tol`` of each stopping rule (see docs/model.md for the measurements behind them).
DEFAULT_TOL = {"answer": 1e-4, "loss": 1e-5}


@dataclass
class JMTResult:
    """A fitted scJMT model: plain NumPy arrays, ready for AnnData's ``.obsm``/``.varm``/``.uns``.

    Attributes
    ----------
    C_rna, C_atac : ndarray, shape (n_cells, K)
        Soft cluster membership of each cell (rows on the simplex).
    C_genes, C_regions : ndarray, shape (n_features, K)
        Soft cluster membership of each feature (rows on the simplex).
    S_rna, S_atac : ndarray, shape (K, K)
        Association between cell clusters (rows) and feature clusters (columns).
    b_rna, b_atac, b_genes, b_regions : ndarray
        Cell and feature biases.
    labels_rna, labels_atac : ndarray of int64
        The recommended cell clusters: each cell's column (``columns_rna`` /
        ``columns_atac``) mapped through ``column_clusters``. One labelling for
        both modalities (the same id is the same cluster); ids are numbered by
        their lowest column, so shared clusters come first.
    columns_rna, columns_atac : ndarray of int64
        The paper's hard clusters: the argmax of each row of C. Columns
        ``0 … n_shared−1`` are shared, then the RNA-only ones, then the ATAC-only ones.
    column_clusters : ndarray of int64, shape (K,), or None
        The cell cluster of each column (:func:`fastjmt.merge_columns`); None
        when ``resolution=None`` was passed to :func:`fastjmt.fit` (then the
        labels are the columns).
    resolution : float or None
        The modularity resolution ``column_clusters`` was made with.
    labels_genes, labels_regions : ndarray of int64
        Hard feature clusters (argmax of C_genes / C_regions).
    loss_history : ndarray, shape (n_iter + 1, 7)
        Per epoch (row 0 is the starting point): ``recon_atac, recon_rna`` (weighted),
        ``cos_S, cos_features`` (cosines, in [−1, 1]), ``mask``, ``entropy`` (unweighted), ``total``.
    loss_terms : tuple of str
        The column names of ``loss_history``.
    n_iter : int
        Epochs run by the kept restart.
    n_undone : int
        How many of those epochs backtracking undone (they raised the loss; the
        factors went back and the step halved). Each repeats the previous row of
        ``loss_history``. 0 with ``backtrack=False``.
    converged : bool
        Whether the kept restart met the stopping rule before ``max_iter``
        (``stop_reason`` says which).
    seed : int
        Seed of the kept restart (``fit(..., random_state=seed, n_init=1)`` reruns it).
    n_shared, n_rna_only, n_atac_only : int
        The cluster layout.
    fit_seconds : float
        Wall time of the whole fit, restarts included.
    restart_losses : ndarray
        Final loss of every restart.
    programs_rna, programs_atac : ndarray, shape (n_cells, K)
        Feature-program activity of each cell: the share of its preprocessed
        signal that falls in each feature cluster, ``(X C_features) / (X 1)``. A
        continuous profile on the same K programs in both modalities (used for the
        2-D embedding plot).
    interrupted : bool
        True when Ctrl-C stopped the fit early (the result is the state after the last whole epoch).
    stop_reason : str
        Why the kept restart stopped: ``"answer"`` (the loss, the labels and S settled: the default rule),
        ``"loss"`` (the loss-only rule), ``"step"`` (backtracking shrank the step below
        ``1e-6 · learning_rate``), ``"max_iter"``, ``"callback"`` or ``"interrupted"``.
    answer_change : tuple of float
        At the last check of the ``stop="answer"`` rule, over the last ``window`` kept epochs: the largest
        share of cells (per modality), genes or regions whose argmax changed, the relative change of S
        (largest over the modalities) and the relative change of the loss per epoch. Empty with ``stop="loss"``
        or before the first check.
    link_coverage : dict or None
        How many RNA genes and ATAC regions have at least one gene activity
        link (``n_genes, genes_linked, gene_share, n_regions, regions_linked,
        region_share``; see :func:`fastjmt.genome.link_coverage`).
    empty_rna, empty_atac : ndarray of bool, shape (n_cells,), or None
        Cells with no counts in the fitted matrix (no stored nonzero). They
        carry no data, so they get no confident membership: their rows of
        ``C_rna`` / ``C_atac`` are uniform (1/K) and their programs 0. Drop or
        flag them downstream (``fit_anndata`` writes ``.obs["<key>_empty"]``).
    """

    C_rna: np.ndarray
    C_atac: np.ndarray
    C_genes: np.ndarray
    C_regions: np.ndarray
    S_rna: np.ndarray
    S_atac: np.ndarray
    b_rna: np.ndarray
    b_atac: np.ndarray
    b_genes: np.ndarray
    b_regions: np.ndarray
    loss_history: np.ndarray
    n_iter: int
    converged: bool
    seed: int
    n_shared: int
    n_rna_only: int
    n_atac_only: int
    fit_seconds: float
    restart_losses: np.ndarray
    programs_rna: np.ndarray
    programs_atac: np.ndarray
    interrupted: bool = False
    loss_terms: tuple = field(default=TERMS + ("total",))
    n_undone: int = 0
    column_clusters: Optional[np.ndarray] = None
    resolution: Optional[float] = None
    stop_reason: str = ""
    answer_change: tuple = ()
    link_coverage: Optional[dict] = None
    empty_rna: Optional[np.ndarray] = None
    empty_atac: Optional[np.ndarray] = None

    @property
    def columns_rna(self) -> np.ndarray:
        """The column of K each RNA cell belongs to most (argmax of its row of ``C_rna``): the paper's clusters."""
        return np.argmax(self.C_rna, axis=1)

    @property
    def columns_atac(self) -> np.ndarray:
        """The column of K each ATAC cell belongs to most (argmax of its row of ``C_atac``)."""
        return np.argmax(self.C_atac, axis=1)

    @property
    def labels_rna(self) -> np.ndarray:
        """The recommended cell clusters of the RNA cells: their columns, merged (``column_clusters``)."""
        cols = self.columns_rna
        return cols if self.column_clusters is None else self.column_clusters[cols]

    @property
    def labels_atac(self) -> np.ndarray:
        """The recommended cell clusters of the ATAC cells (same cluster ids as ``labels_rna``)."""
        cols = self.columns_atac
        return cols if self.column_clusters is None else self.column_clusters[cols]

    @property
    def n_clusters(self) -> int:
        """How many cell clusters the labels use at most (K when no column was merged)."""
        return self.K if self.column_clusters is None else int(self.column_clusters.max()) + 1

    def relabel(self, resolution: Optional[float] = 1.0, n_neighbors: int = 15, n_threads: Optional[int] = None
                ) -> "JMTResult":
        """A copy of the result whose labels merge the columns at another ``resolution`` (None: no merge).

        The factors are shared with this result, not copied; only
        ``column_clusters`` and ``resolution`` differ. See
        :func:`fastjmt.merge_columns` (lower resolution: fewer clusters).
        """
        from .clustering import merge_columns

        if resolution is None:  # no merge: the labels are the columns
            return dataclasses.replace(self, column_clusters=None, resolution=None)
        keep_r = slice(None) if self.empty_rna is None else ~self.empty_rna  # cells without data take no part
        keep_a = slice(None) if self.empty_atac is None else ~self.empty_atac
        cc = merge_columns(self.programs_rna[keep_r], self.programs_atac[keep_a], self.columns_rna[keep_r],
                           self.columns_atac[keep_a], self.n_shared, self.n_rna_only, self.n_atac_only,
                           resolution=resolution, n_neighbors=n_neighbors, n_threads=n_threads)
        return dataclasses.replace(self, column_clusters=cc, resolution=float(resolution))

    @property
    def labels_genes(self) -> np.ndarray:
        return np.argmax(self.C_genes, axis=1)

    @property
    def labels_regions(self) -> np.ndarray:
        return np.argmax(self.C_regions, axis=1)

    @property
    def loss(self) -> float:
        """The final value of the objective."""
        return float(self.loss_history[-1, -1])

    @property
    def K(self) -> int:
        return self.C_rna.shape[1]

    def save(self, path) -> None:
        """Write the result to an ``.npz`` file (arrays + a JSON header; read back without pickle).

        See :func:`fastjmt.load_result`.
        """
        arrays, meta = {}, {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if isinstance(v, np.ndarray):
                arrays[k] = v
            else:
                meta[k] = list(v) if isinstance(v, tuple) else v
        meta = {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in meta.items()}
        np.savez_compressed(path, _meta=np.array(json.dumps(dict(meta, format="fastjmt-result-1"))), **arrays)

    def to_dict(self) -> dict:
        """Every array and scalar of the result in a plain dict (for ``np.savez`` or AnnData ``.uns``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out.update(labels_rna=self.labels_rna, labels_atac=self.labels_atac, columns_rna=self.columns_rna,
                   columns_atac=self.columns_atac,
                   labels_genes=self.labels_genes, labels_regions=self.labels_regions)
        return out


def load_result(path) -> JMTResult:
    """Read a result written by :meth:`JMTResult.save` (no pickle involved)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["_meta"]))
        arrays = {k: z[k] for k in z.files if k != "_meta"}
    if meta.pop("format", None) != "fastjmt-result-1":
        raise ValueError(f"{path!r} is not a fastjmt result file")
    meta["loss_terms"] = tuple(meta["loss_terms"])
    meta["answer_change"] = tuple(meta.get("answer_change", ()))
    return JMTResult(**arrays, **meta)


# --------------------------------------------------------------------------- validation


def _restart_seeds(random_state, n_init: int) -> list:
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


@contextlib.contextmanager
def _ctrl_c_finishes_epoch():
    """While the body runs, the first SIGINT sets an event (the fit stops after the epoch); a second one raises.

    Only in the main thread, where Python delivers signals; elsewhere the event is never set.
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()
        logger.warning("interrupt received: finishing the current epoch (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- fit


def fit(
    rna,
    atac,
    gene_activity,
    *,
    n_shared: int,
    n_rna_only: int = 0,
    n_atac_only: int = 0,
    a1: float = DEFAULT_WEIGHTS["a1"],
    a2: float = DEFAULT_WEIGHTS["a2"],
    a3: float = DEFAULT_WEIGHTS["a3"],
    a4: float = DEFAULT_WEIGHTS["a4"],
    a5: float = DEFAULT_WEIGHTS["a5"],
    a6: float = DEFAULT_WEIGHTS["a6"],
    max_iter: int = 300,
    tol: Optional[float] = None,
    patience: int = 5,
    stop: str = "answer",
    window: int = 5,
    label_tol: float = 1e-3,
    S_tol: float = 1e-2,
    step_decay: float = 0.5,
    learning_rate: float = 0.1,
    backtrack: bool = True,
    optimizer: str = "adam",
    batch_cells: float = 1.0,
    batch_features: float = 1.0,
    init: str = "joint",
    init_scale: float = 2.0,
    n_init: int = 1,
    random_state: Union[None, int, np.random.SeedSequence, np.random.Generator] = 0,
    n_threads: Optional[int] = None,
    dtype=np.float32,
    preprocess: bool = True,
    verbose: int = 0,
    callback: Optional[Callable[[int, dict, dict], Any]] = None,
    checkpoint: Union[None, str, os.PathLike] = None,
    checkpoint_every: int = 10,
    resume: Union[None, str, os.PathLike] = None,
    low_memory: bool = False,
    resolution: Optional[float] = 1.0,
) -> JMTResult:
    """Fit scJMT to unpaired scRNA-seq and scATAC-seq data.

    Parameters
    ----------
    rna : sparse matrix or array-like, shape (n_rna, n_genes)
        RNA counts, cells × genes. Any scipy sparse format or dense array; never
        densified, never modified.
    atac : sparse matrix or array-like, shape (n_atac, n_regions)
        ATAC counts or 0/1, cells × regions.
    gene_activity : sparse matrix or array-like, shape (n_genes, n_regions)
        Which regions regulate which gene.
    n_shared, n_rna_only, n_atac_only : int
        Clusters present in both modalities, only in RNA, only in ATAC.
        ``K = n_shared + n_rna_only + n_atac_only``.
    a1, a2 : float
        Weights of the ATAC and RNA reconstruction errors (mean squared errors).
    a3 : float
        Weight of the cosine coupling of S_atac and S_rna.
    a4 : float
        Weight of the cosine coupling of C_genes and A C_regions.
    a5 : float
        Weight of the term that keeps cells out of the other modality's clusters
        (mean over cells of the squared membership in those columns).
    a6 : float
        Weight of the mean entropy of the cell memberships (an extra regulariser,
        not in the paper: it pushes each cell toward one cluster).
    max_iter : int
        Most epochs per restart (an epoch updates every block once): a cap. A
        fit that reaches it without meeting the stopping rule warns
        (:class:`ConvergenceWarning`).
    stop : {"answer", "loss"}
        The stopping rule. ``"answer"`` (default): every ``window`` kept epochs
        the fit compares its answer with the one ``window`` kept epochs before
        and stops when all three have settled: the share of cells (of each
        modality), of genes and of regions whose argmax cluster changed is at
        most ``label_tol``, S changed by at most ``S_tol`` (relative,
        Frobenius, both modalities) and the loss by at most ``tol`` per epoch
        (relative). ``"loss"``: the relative change of the loss stays below
        ``tol`` for ``patience`` epochs in a row (the rule before 2026-11-29).
        With either, backtracking's step falling below ``1e-6 ·
        learning_rate`` also ends the fit as converged. The defaults were
        measured on the simulator and the shared datasets (docs/model.md).
    tol : float, optional
        Relative change of the loss per epoch below which it counts as
        settled. Default: 1e-4 with ``stop="answer"``, 1e-5 with ``stop="loss"``.
        0 never stops on the loss (``max_iter`` epochs are run).
    patience : int
        ``stop="loss"`` only: epochs in a row the loss change must stay below ``tol``.
    window : int
        ``stop="answer"`` only: kept epochs between two comparisons of the answer
        (epochs undone by backtracking leave the answer unchanged and do not count).
    label_tol : float
        ``stop="answer"`` only: largest share of cells or features whose argmax may
        still change over ``window`` epochs.
    S_tol : float
        ``stop="answer"`` only: largest relative change of S over ``window`` epochs.
    step_decay : float
        ``stop="answer"`` only: at a check where no cell changed cluster
        (share ≤ ``label_tol`` in both modalities) and the loss changed by at
        most ``10 · tol`` per epoch, but the answer has not settled, the
        largest step is multiplied by this (0 < step_decay ≤ 1; 1 keeps it). Adam moves every logit by about the step size whatever
        its gradient, so with a constant step the feature labels and S keep
        jittering and the rule would never be met (docs/model.md).
    learning_rate : float
        Step size of the optimiser for the logits and S (with ``backtrack``,
        the largest step; the step in use is lower after an undone epoch).
    backtrack : bool
        Keep an epoch only if it does not raise the loss. An epoch that does is
        undone (factors and optimiser state go back to where they were), the
        step is halved, and every kept epoch then grows it by 5 % up to
        ``learning_rate``. The loss history is then non-increasing; an undone
        epoch still counts in ``n_iter`` (it cost a pass over the data) and
        repeats the previous loss in ``loss_history``. The fit also counts as
        converged when the step has shrunk below ``1e-6 · learning_rate``
        (no step lowers the loss any more). ``False``: every epoch is kept
        (Adam's loss can then rise a little).
    optimizer : {"adam", "gd"}
        Adam (default), or plain gradient descent (monotone for small steps).
    batch_cells, batch_features : float
        Fraction of cells / features drawn for each epoch's mini-batch (1 = full batch).
    init : {"joint", "spectral", "random"}
        Starting point; see :mod:`fastjmt.initialize`. ``"joint"`` (default):
        each modality clustered on its own, then the ATAC cells' clusters
        informed by their nearest RNA cells in a CCA of RNA against ATAC gene
        scores; ``"spectral"``: the two modalities' own clusters paired by
        their gene-space profiles; ``"random"``: the paper's random logits.
    init_scale : float
        Size of the starting logits (larger = more confident start).
    n_init : int
        Restarts from different seeds; the one with the lowest final loss is kept.
    random_state : None, int, SeedSequence or Generator
        Seed; the same seed and thread count give the same result.
    n_threads : int, optional
        Numba threads (default: all). BLAS is limited to one thread during the fit.
    dtype : {numpy.float32, numpy.float64}
        Floating type of the data copy and the factors.
    preprocess : bool
        Apply the default preprocessing (RNA library-size normalisation + log1p
        scaled to max 1, ATAC binarised, gene activity rows summing to 1). Set to
        False when the inputs are already prepared.
    verbose : int
        0 silent; 1 reports progress every 10 epochs, 2 every epoch, through the
        ``fastjmt`` logger (a stderr handler is attached for the fit if the logger
        has none); on a terminal with tqdm installed, a progress bar instead.
    callback : callable, optional
        ``callback(iteration, terms, params)`` after every epoch; return True to stop.
    checkpoint : path, optional
        Write the fit's state here every ``checkpoint_every`` epochs, after every
        restart and on Ctrl-C (atomically: a temporary file renamed over the old one).
    checkpoint_every : int
        Epochs between checkpoints (0: only after restarts and on Ctrl-C).
    resume : path, optional
        Go on from this checkpoint. With the same inputs and options (checked),
        the result equals that of an uninterrupted fit.
    low_memory : bool
        Keep no transposed copy of the data: products with ``Xᵀ`` scatter from
        the CSR into one features × K buffer per thread. Saves about the size of
        the inputs' CSR arrays, at some speed (see docs/performance.md).
    resolution : float or None, default 1.0
        Modularity resolution of the column merge that makes ``labels_rna`` /
        ``labels_atac`` (:func:`fastjmt.merge_columns`; lower: fewer clusters).
        None: no merge, the labels are the argmax columns. Change it after the
        fit with :meth:`JMTResult.relabel`.

    Notes
    -----
    Ctrl-C (SIGINT, when ``fit`` runs in the main thread) finishes the current
    epoch, writes the checkpoint if one is set, and returns the state so far with
    ``result.interrupted = True``; a second Ctrl-C stops at once.

    Returns
    -------
    JMTResult

    Raises
    ------
    ValueError, TypeError
        On inconsistent shapes, non-finite or negative data, an RNA or ATAC
        matrix without any nonzero value, a gene activity without any link, or
        bad parameters (all checked before any copy or preprocessing).

    Warns
    -----
    UserWarning
        With ``preprocess=True``, when ``rna`` holds non-integer values (it
        looks normalised or log-transformed already: pass raw counts or
        ``preprocess=False``).
    fastjmt.genome.LinkCoverageWarning
        When under half of the genes or a tenth of the regions have a link
        (``result.link_coverage`` has the numbers).
    ConvergenceWarning
        When ``max_iter`` ends the fit before the loss settled.
    fastjmt.NonFiniteError
        If a factor becomes NaN or infinite (the message names the block and iteration).
    """
    t_start = time.perf_counter()
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    for flag, name in ((preprocess, "preprocess"), (low_memory, "low_memory"), (backtrack, "backtrack")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    verbose = check_count(int(verbose) if isinstance(verbose, (bool, np.bool_)) else verbose, "verbose", 0)
    n_shared, n_rna_only, n_atac_only = check_layout(n_shared, n_rna_only, n_atac_only)
    K = n_shared + n_rna_only + n_atac_only
    weights = {k: check_positive(v, k, allow_zero=True) for k, v in dict(a1=a1, a2=a2, a3=a3, a4=a4, a5=a5, a6=a6).items()}
    max_iter = check_count(max_iter, "max_iter", 1)
    patience = check_count(patience, "patience", 1)
    window = check_count(window, "window", 1)
    n_init = check_count(n_init, "n_init", 1)
    if stop not in ("answer", "loss"):
        raise ValueError(f"stop must be 'answer' or 'loss', got {stop!r}")
    tol = DEFAULT_TOL[stop] if tol is None else check_positive(tol, "tol", allow_zero=True)
    label_tol = check_positive(label_tol, "label_tol", allow_zero=True)
    S_tol = check_positive(S_tol, "S_tol", allow_zero=True)
    step_decay = check_fraction(step_decay, "step_decay")
    learning_rate = check_positive(learning_rate, "learning_rate")
    init_scale = check_positive(init_scale, "init_scale", allow_zero=True)
    batch_cells = check_fraction(batch_cells, "batch_cells")
    batch_features = check_fraction(batch_features, "batch_features")
    if optimizer not in ("adam", "gd"):
        raise ValueError(f"optimizer must be 'adam' or 'gd', got {optimizer!r}")
    if resolution is not None:
        resolution = check_positive(resolution, "resolution")
    if init not in ("joint", "spectral", "random"):
        raise ValueError(f"init must be 'joint', 'spectral' or 'random', got {init!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    threads = resolve_n_threads(n_threads)
    checkpoint_every = check_count(checkpoint_every, "checkpoint_every", 0)
    for value, name in ((checkpoint, "checkpoint"), (resume, "resume")):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path, got {value!r}")
    if resume is not None and not os.path.isfile(resume):
        raise FileNotFoundError(f"resume: no checkpoint at {os.fspath(resume)!r}")
    if checkpoint is not None and not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        raise FileNotFoundError(f"checkpoint: the folder of {os.fspath(checkpoint)!r} does not exist")
    _restart_seeds(random_state, 1)  # validates random_state before any work

    check_inputs(rna, atac, gene_activity, K, preprocess=bool(preprocess))
    if preprocess:
        why = not_counts(rna)
        if why:
            warnings.warn(f"rna does not look like raw counts: {why}. fit normalises and log-transforms RNA "
                          "(preprocess=True); for data already normalised or log-transformed (e.g. scanpy's .X after "
                          "normalize_total/log1p) pass the raw counts (e.g. a 'counts' layer) or preprocess=False",
                          UserWarning, stacklevel=2)
    G, R, A = (pp.to_csr(X, dtype=dtype, name=name)
               for X, name in ((rna, "rna"), (atac, "atac"), (gene_activity, "gene_activity")))
    from .errors import LinkCoverageWarning
    from .genome import MIN_GENE_SHARE, MIN_REGION_SHARE, link_coverage

    coverage = link_coverage(A)
    logger.info("gene activity: %s", coverage)
    if coverage.gene_share < MIN_GENE_SHARE or coverage.region_share < MIN_REGION_SHARE:
        warnings.warn(f"low gene activity coverage: {coverage}; correct builds of the shared data link over 98 % of "
                      "genes, so check the gene and contig names the links were built with", LinkCoverageWarning,
                      stacklevel=2)
    empty = {"rna": np.diff(G.indptr) == 0, "atac": np.diff(R.indptr) == 0}
    if preprocess:
        # G, R and A are private copies (to_csr), so preprocessing may work in place
        G = pp.preprocess_rna(G, copy=False)
        R = pp.preprocess_atac(R, copy=False)
        A = pp.preprocess_gene_activity(A, copy=False)

    problem = build_problem(G, R, A, n_shared, n_rna_only, n_atac_only, weights, dtype, bool(low_memory))
    sched = Schedule(
        max_iter=max_iter, tol=tol, patience=patience, stop=stop, window=window, label_tol=label_tol, S_tol=S_tol,
        step_decay=step_decay, optimizer=optimizer, learning_rate=learning_rate,
        backtrack=bool(backtrack), batch_cells=batch_cells, batch_features=batch_features, init=init,
        init_scale=init_scale, verbose=int(verbose), callback=callback,
    )
    if resume is not None and random_state is None:  # the seeds were drawn fresh: take them from the checkpoint
        seeds = list(ckpt.read_meta(resume).get("fingerprint", {}).get("seeds", []))
        if len(seeds) != n_init:
            seeds = _restart_seeds(random_state, n_init)
    else:
        seeds = _restart_seeds(random_state, n_init)

    fingerprint = ckpt.fingerprint((G, R, A), problem, (n_shared, n_rna_only, n_atac_only), weights, dtype, {
        "optimizer": [optimizer, learning_rate, bool(backtrack), batch_cells, batch_features],
        "init": [init, init_scale],
        "preprocess": bool(preprocess),
        "low_memory": bool(low_memory),
    }, seeds)

    handler = None
    if verbose and not any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastjmt: %(message)s"))
        logger.addHandler(handler)
        prev_level = logger.level
        logger.setLevel(logging.INFO)
    try:
        with fit_threads(threads), _ctrl_c_finishes_epoch() as interrupted:
            outcome = fit_restarts(problem, sched, (n_shared, n_rna_only, n_atac_only), seeds, fingerprint,
                                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                                   should_stop=interrupted.is_set)
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(prev_level)
    best, losses = outcome.best, outcome.losses
    if outcome.interrupted:
        where = f"; the state is saved in {checkpoint!r}, resume with resume=" if checkpoint else ""
        warnings.warn(f"fastjmt.fit was interrupted (Ctrl-C) after epoch {best.n_iter} and returns the best state so "
                      f"far{where}", UserWarning, stacklevel=2)
    if not best.converged and not best.stopped_by_callback and not outcome.interrupted:
        if stop == "loss":
            why = f"the relative loss change stayed below tol={tol} for {patience} epochs; raise max_iter or tol"
        else:
            seen = "" if not best.change else (
                f" (over the last {window} epochs: {100 * best.change[0]:.2g} % of labels changed, S by "
                f"{best.change[1]:.2g}, the loss by {best.change[2]:.2g} per epoch)")
            why = (f"the answer settled: labels changed by <= label_tol={label_tol}, S by <= S_tol={S_tol} and the "
                   f"loss by <= tol={tol} per epoch{seen}; raise max_iter or the tolerances")
        warnings.warn(f"fastjmt.fit stopped at max_iter={max_iter} before {why}", ConvergenceWarning, stacklevel=2)
    p = best.params
    programs = {m: program_activity(problem.modality(m), p[m].Cf) for m in ("rna", "atac")}
    C = {}
    for m in ("rna", "atac"):  # a cell without data gets no confident membership
        C[m] = p[m].C
        if empty[m].any():
            C[m] = C[m].copy()
            C[m][empty[m]] = 1.0 / K
            logger.info("%d %s cells have no counts: uniform membership (empty_%s)", int(empty[m].sum()), m, m)
    column_clusters = None
    if resolution is not None:
        from .clustering import merge_columns

        keep = {m: ~empty[m] for m in ("rna", "atac")}  # cells without data take no part in the merge
        column_clusters = merge_columns(programs["rna"][keep["rna"]], programs["atac"][keep["atac"]],
                                        C["rna"][keep["rna"]].argmax(axis=1), C["atac"][keep["atac"]].argmax(axis=1),
                                        n_shared, n_rna_only, n_atac_only, resolution=resolution, n_threads=threads)
    return JMTResult(
        C_rna=C["rna"], C_atac=C["atac"], C_genes=p["rna"].Cf, C_regions=p["atac"].Cf,
        S_rna=p["rna"].S, S_atac=p["atac"].S, b_rna=p["rna"].b, b_atac=p["atac"].b,
        b_genes=p["rna"].c, b_regions=p["atac"].c, loss_history=best.history, n_iter=best.n_iter,
        converged=best.converged, seed=best.seed, n_shared=n_shared, n_rna_only=n_rna_only,
        n_atac_only=n_atac_only, fit_seconds=time.perf_counter() - t_start, restart_losses=np.asarray(losses),
        interrupted=outcome.interrupted, programs_rna=programs["rna"], programs_atac=programs["atac"],
        n_undone=best.undone, column_clusters=column_clusters, resolution=resolution,
        stop_reason=best.stop_reason, answer_change=tuple(float(x) for x in best.change),
        link_coverage=coverage.as_dict(), empty_rna=empty["rna"], empty_atac=empty["atac"],
    )


def program_activity(mod: Modality, V: np.ndarray) -> np.ndarray:
    """``(X V) / (X 1)`` per cell: the share of a cell's (preprocessed) signal in each feature cluster.

    With negative values (``preprocess=False``) a row sum can be 0 or negative;
    the denominator is then ``|X| 1`` for every cell, which keeps each program
    activity finite and in [−1, 1]. Cells without data get 0.
    """
    XV = spmm_all(mod.X, mod.p, V)
    data = mod.X[2]
    denom = mod.row_sums
    if data.size and data.min() < 0:
        denom, _ = pp.row_sums(mod.X[0], np.abs(data))
    out = np.zeros_like(XV, dtype=np.float64)
    np.divide(XV, denom[:, None], out=out, where=denom[:, None] > 0)
    return out.astype(V.dtype)

"""Public API: :func:`fit` and its result, :class:`JMTResult`.

This is the only layer that knows about scipy matrices and the user's types;
it validates, converts, preprocesses and hands raw arrays to the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

from . import checkpoint as ckpt
from . import preprocess as pp
from ._threads import fit_threads, resolve_n_threads
from .driver import fit_restarts, schedule_of
from .errors import ConvergenceWarning, LinkCoverageWarning
from .objective import TERMS, program_activity
from .options import DEFAULT_WEIGHTS, DEFAULTS, FitOptions, check_options, restart_seeds
from .problem import Problem, build_problem
from .validation import check_inputs, not_counts

logger = logging.getLogger("fastjmt")

__all__ = ["fit", "JMTResult", "ConvergenceWarning", "DEFAULT_WEIGHTS", "load_result"]



def _merged(columns, column_clusters):
    """Each cell's column mapped through ``column_clusters`` (None: the columns); chunk by chunk for a Dask array."""
    if column_clusters is None:
        return columns
    lookup = np.asarray(column_clusters)
    if hasattr(columns, "map_blocks"):
        return columns.map_blocks(lookup.__getitem__, dtype=lookup.dtype)
    return lookup[columns]


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
    model : dict or None
        What mapping new cells onto this fit needs besides the arrays
        (:func:`fastjmt.transform.map_cells`): ``preprocess``, the RNA
        preprocessing constants of the training cells (``rna_target_sum``,
        ``rna_max_value``), ``dtype``, the weights ``a1`` … ``a6``,
        ``init_scale`` and ``learning_rate``. JSON-able.
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
    model: Optional[dict] = None

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
        return _merged(self.columns_rna, self.column_clusters)

    @property
    def labels_atac(self) -> np.ndarray:
        """The recommended cell clusters of the ATAC cells (same cluster ids as ``labels_rna``)."""
        return _merged(self.columns_atac, self.column_clusters)

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
            if hasattr(v, "compute") and hasattr(v, "chunks"):  # a Dask fit's per-cell output: written computed
                v = np.asarray(v)
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
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["_meta"]))
            arrays = {k: z[k] for k in z.files if k != "_meta"}
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{os.fspath(path)!r} is not a fastjmt result file (written by JMTResult.save): "
                         f"{type(exc).__name__}") from None
    if not isinstance(meta, dict) or meta.pop("format", None) != "fastjmt-result-1":
        raise ValueError(f"{os.fspath(path)!r} is not a fastjmt result file")
    meta["loss_terms"] = tuple(meta["loss_terms"])
    meta["answer_change"] = tuple(meta.get("answer_change", ()))
    return JMTResult(**arrays, **meta)


# --------------------------------------------------------------------------- validation


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
    n_rna_only: int = DEFAULTS.n_rna_only,
    n_atac_only: int = DEFAULTS.n_atac_only,
    a1: float = DEFAULTS.a1,
    a2: float = DEFAULTS.a2,
    a3: float = DEFAULTS.a3,
    a4: float = DEFAULTS.a4,
    a5: float = DEFAULTS.a5,
    a6: float = DEFAULTS.a6,
    max_iter: int = DEFAULTS.max_iter,
    tol: Optional[float] = DEFAULTS.tol,
    patience: int = DEFAULTS.patience,
    stop: str = DEFAULTS.stop,
    window: int = DEFAULTS.window,
    label_tol: float = DEFAULTS.label_tol,
    S_tol: float = DEFAULTS.S_tol,
    step_decay: float = DEFAULTS.step_decay,
    learning_rate: float = DEFAULTS.learning_rate,
    backtrack: bool = DEFAULTS.backtrack,
    optimizer: str = DEFAULTS.optimizer,
    batch_cells: float = DEFAULTS.batch_cells,
    batch_features: float = DEFAULTS.batch_features,
    init: str = DEFAULTS.init,
    init_scale: float = DEFAULTS.init_scale,
    n_init: int = DEFAULTS.n_init,
    random_state: Union[None, int, np.random.SeedSequence, np.random.Generator] = DEFAULTS.random_state,
    n_threads: Optional[int] = DEFAULTS.n_threads,
    dtype=DEFAULTS.dtype,
    preprocess: bool = DEFAULTS.preprocess,
    verbose: int = DEFAULTS.verbose,
    callback: Optional[Callable[[int, dict, dict], Any]] = DEFAULTS.callback,
    checkpoint: Union[None, str, os.PathLike] = DEFAULTS.checkpoint,
    checkpoint_every: int = DEFAULTS.checkpoint_every,
    resume: Union[None, str, os.PathLike] = DEFAULTS.resume,
    low_memory: bool = DEFAULTS.low_memory,
    resolution: Optional[float] = DEFAULTS.resolution,
    client=DEFAULTS.client,
    persist: bool = DEFAULTS.persist,
    out: Union[None, str, os.PathLike] = DEFAULTS.out,
    start_cells: int = DEFAULTS.start_cells,
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
        largest step is multiplied by this (0 < step_decay ≤ 1; 1 keeps it).
        Adam moves every logit by about the step size whatever its gradient,
        so with a constant step the feature labels and S keep jittering and
        the rule would never be met (docs/model.md).
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
    client : dask.distributed.Client, optional
        Dask inputs only (``rna`` and ``atac`` as Dask arrays of row chunks,
        scipy CSR or dense, e.g. from ``anndata.experimental.read_elem_lazy``):
        the cluster to fit on. None starts a ``LocalCluster`` sized to this
        machine (one worker process per 4 cores) and closes it after the fit.
        See docs/dask.md.
    persist : bool
        Dask inputs only: keep the prepared data chunks in the workers' memory
        (faster epochs) instead of reading them again for each pass (out of core).
    out : str or path, optional
        Dask inputs only: a zarr store to write the per-cell results to
        (``C_rna``, ``programs_rna``, ``b_rna``, ``empty_rna`` and the ATAC
        ones); the result's per-cell arrays then read from it.
    start_cells : int
        Dask inputs only: cells per modality the start (``init``) sees, drawn at
        random; the other cells start at the nearest column centroid of program
        activities. With at most this many cells the start sees all of them
        and the fit is the in-memory one. 20,000: the in-memory start's own
        subset size for its SVD and k-means.

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
    given = dict(locals())  # the arguments, before any other name is bound
    t_start = time.perf_counter()
    opts = check_options(FitOptions(**{name: given[name] for name in FitOptions.names()}))
    threads = resolve_n_threads(opts.n_threads)
    from .dask_driver import is_dask

    if is_dask(rna) or is_dask(atac):
        return _fit_dask(rna, atac, gene_activity, opts, t_start)
    for name in ("client", "out"):
        if getattr(opts, name) is not None:
            raise ValueError(f"{name}= applies to Dask inputs only (rna and atac as Dask arrays); drop it, or pass "
                             "dask.array.from_array(rna, chunks=(rows, -1)) and the same for atac")
    if opts.persist:
        raise ValueError("persist=True applies to Dask inputs only (rna and atac as Dask arrays)")
    prep = _prepare(rna, atac, gene_activity, opts)
    outcome = _run(prep, opts, threads)
    return _result(prep, outcome, opts, threads, t_start)


@dataclass
class _Prepared:
    """The inputs as the fit sees them: the problem, the prepared CSR matrices, empty cells, link coverage."""

    problem: Problem
    matrices: tuple  # (G, R, A) prepared CSR
    empty: dict  # modality -> bool per cell: no counts
    coverage: Any
    rna_constants: dict  # preprocess.rna_constants of the training RNA (empty without preprocessing)


def _fit_dask(rna, atac, gene_activity, opts: FitOptions, t_start: float) -> JMTResult:
    """The fit on Dask arrays (:mod:`fastjmt.dask_driver`): the gene activity prepared here as in memory, the
    run there, the result here (per-cell arrays as the driver returns them: Dask or NumPy)."""
    from . import dask_driver

    dask_driver.check_inputs(rna, atac, gene_activity, opts)
    A = pp.to_csr(gene_activity, dtype=opts.dtype, name="gene_activity")
    coverage = check_coverage(A)
    if opts.preprocess:
        A = pp.preprocess_gene_activity(A, copy=False)
    with _verbose_logging(opts), _ctrl_c_finishes_epoch() as interrupted:
        run = dask_driver.fit(rna, atac, A, opts, _seeds(opts), _fingerprint_options(opts), interrupted.is_set)
    warn_how_it_ended(run.outcome, opts)
    return _make_result(opts, run.outcome, run.cells, run.column_clusters, coverage, run.rna_constants, t_start)


def _make_result(opts: FitOptions, outcome, cells: dict, column_clusters, coverage, rna_constants: dict,
                 t_start: float) -> JMTResult:
    """The :class:`JMTResult` of a fit: the kept restart's feature-sized factors, and per modality the per-cell
    outputs ``cells[m]`` (``C``, ``programs``, ``b``, ``empty``: NumPy, or Dask arrays for a Dask fit)."""
    best = outcome.best
    p = best.params
    return JMTResult(
        C_rna=cells["rna"]["C"], C_atac=cells["atac"]["C"], C_genes=p["rna"].Cf, C_regions=p["atac"].Cf,
        S_rna=p["rna"].S, S_atac=p["atac"].S, b_rna=cells["rna"]["b"], b_atac=cells["atac"]["b"],
        b_genes=p["rna"].c, b_regions=p["atac"].c, loss_history=best.history, n_iter=best.n_iter,
        converged=best.converged, seed=best.seed, n_shared=opts.n_shared, n_rna_only=opts.n_rna_only,
        n_atac_only=opts.n_atac_only, fit_seconds=time.perf_counter() - t_start,
        restart_losses=np.asarray(outcome.losses), interrupted=outcome.interrupted,
        programs_rna=cells["rna"]["programs"], programs_atac=cells["atac"]["programs"], n_undone=best.undone,
        column_clusters=column_clusters, resolution=opts.resolution, stop_reason=best.stop_reason,
        answer_change=tuple(float(x) for x in best.change), link_coverage=coverage.as_dict(),
        empty_rna=cells["rna"]["empty"], empty_atac=cells["atac"]["empty"],
        model=dict(preprocess=opts.preprocess, rna_target_sum=rna_constants.get("target_sum"),
                   rna_max_value=rna_constants.get("max_value"), dtype=np.dtype(opts.dtype).name,
                   init_scale=opts.init_scale, learning_rate=opts.learning_rate, **opts.weights),
    )


def check_coverage(A):
    """The gene activity's link coverage (logged), with a warning when it is low; returns it."""
    from .genome import MIN_GENE_SHARE, MIN_REGION_SHARE, link_coverage

    coverage = link_coverage(A)
    logger.info("gene activity: %s", coverage)
    if coverage.gene_share < MIN_GENE_SHARE or coverage.region_share < MIN_REGION_SHARE:
        warnings.warn(f"low gene activity coverage: {coverage}; correct builds of the shared data link over 98 % of "
                      "genes, so check the gene and contig names the links were built with", LinkCoverageWarning,
                      stacklevel=4)
    return coverage


def _prepare(rna, atac, gene_activity, opts: FitOptions) -> _Prepared:
    """Check the inputs, copy them to canonical CSR of ``opts.dtype``, preprocess the copies, build the problem."""
    check_inputs(rna, atac, gene_activity, opts.K, preprocess=opts.preprocess)
    if opts.preprocess:
        why = not_counts(rna)
        if why:
            warnings.warn(f"rna does not look like raw counts: {why}. fit normalises and log-transforms RNA "
                          "(preprocess=True); for data already normalised or log-transformed (e.g. scanpy's .X after "
                          "normalize_total/log1p) pass the raw counts (e.g. a 'counts' layer) or preprocess=False",
                          UserWarning, stacklevel=3)
    G, R, A = (pp.to_csr(X, dtype=opts.dtype, name=name)
               for X, name in ((rna, "rna"), (atac, "atac"), (gene_activity, "gene_activity")))
    coverage = check_coverage(A)
    empty = {"rna": np.diff(G.indptr) == 0, "atac": np.diff(R.indptr) == 0}
    constants = pp.rna_constants(G) if opts.preprocess else {}
    if opts.preprocess:
        # G, R and A are private copies (to_csr), so preprocessing may work in place
        G = pp.preprocess_rna(G, copy=False)
        R = pp.preprocess_atac(R, copy=False)
        A = pp.preprocess_gene_activity(A, copy=False)
    problem = build_problem(G, R, A, *opts.layout, opts.weights, opts.dtype, opts.low_memory)
    return _Prepared(problem, (G, R, A), empty, coverage, constants)


def _seeds(opts: FitOptions) -> list:
    """The restarts' seeds: from ``random_state``, or the checkpoint's when resuming with ``random_state=None``."""
    if opts.resume is not None and opts.random_state is None:  # seeds drawn fresh: the checkpoint's
        seeds = list(ckpt.read_meta(opts.resume).get("fingerprint", {}).get("seeds", []))
        if len(seeds) == opts.n_init:
            return seeds
    return restart_seeds(opts.random_state, opts.n_init)


def _fingerprint_options(opts: FitOptions) -> dict:
    """The options a resumed fit must share with its checkpoint (besides data, layout, weights, dtype, seeds)."""
    return {
        "optimizer": [opts.optimizer, opts.learning_rate, opts.backtrack, opts.batch_cells, opts.batch_features],
        "init": [opts.init, opts.init_scale],
        "preprocess": opts.preprocess,
        "low_memory": opts.low_memory,
    }


@contextlib.contextmanager
def _verbose_logging(opts: FitOptions):
    """With ``verbose``, fastjmt's logger prints to stderr for the body (unless the caller configured it)."""
    handler = None
    if opts.verbose and not any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastjmt: %(message)s"))
        logger.addHandler(handler)
        prev_level = logger.level
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(prev_level)


def _run(prep: _Prepared, opts: FitOptions, threads: int):
    """The restarts (or their resumption), with the threads, Ctrl-C and the verbose logger set up and restored."""
    seeds = _seeds(opts)
    fingerprint = ckpt.fingerprint(prep.matrices, prep.problem, opts.layout, opts.weights, opts.dtype,
                                   _fingerprint_options(opts), seeds)
    if opts.checkpoint is not None or opts.resume is not None:  # the inputs' contents, not only their sums
        fingerprint["digest"] = ckpt.digest(prep.matrices)
    with _verbose_logging(opts), fit_threads(threads), _ctrl_c_finishes_epoch() as interrupted:
        return fit_restarts(prep.problem, schedule_of(opts), opts.layout, seeds, fingerprint,
                            checkpoint=opts.checkpoint, checkpoint_every=opts.checkpoint_every, resume=opts.resume,
                            should_stop=interrupted.is_set)


def warn_how_it_ended(outcome, opts: FitOptions, stacklevel: int = 4, name: str = "fastjmt.fit") -> None:
    """The warnings a user must see about how a fit ended: interrupted, or stopped by ``max_iter`` (with what
    the stopping rule measured last)."""
    best = outcome.best
    if outcome.interrupted:
        where = f"; the state is saved in {opts.checkpoint!r}, resume with resume=" if opts.checkpoint else ""
        warnings.warn(f"{name} was interrupted (Ctrl-C) after epoch {best.n_iter} and returns the best state so "
                      f"far{where}", UserWarning, stacklevel=stacklevel)
    if not best.converged and not best.stopped_by_callback and not outcome.interrupted:
        if opts.stop == "loss":
            why = (f"the relative loss change stayed below tol={opts.tol} for {opts.patience} epochs; raise max_iter "
                   "or tol")
        else:
            seen = "" if not best.change else (
                f" (over the last {opts.window} epochs: {100 * best.change[0]:.2g} % of labels changed, S by "
                f"{best.change[1]:.2g}, the loss by {best.change[2]:.2g} per epoch)")
            why = (f"the answer settled: labels changed by <= label_tol={opts.label_tol}, S by <= S_tol={opts.S_tol} "
                   f"and the loss by <= tol={opts.tol} per epoch{seen}; raise max_iter or the tolerances")
        warnings.warn(f"{name} stopped at max_iter={opts.max_iter} before {why}", ConvergenceWarning,
                      stacklevel=stacklevel)


def _result(prep: _Prepared, outcome, opts: FitOptions, threads: int, t_start: float) -> JMTResult:
    """The warnings a user must see about how the fit ended, then the result: factors, program activities,
    memberships of empty cells made uniform, the column merge."""
    best, K = outcome.best, opts.K
    warn_how_it_ended(outcome, opts)
    p, empty, problem = best.params, prep.empty, prep.problem
    n_shared, n_rna_only, n_atac_only = opts.layout
    programs = {m: program_activity(problem.modality(m), p[m].Cf) for m in ("rna", "atac")}
    C = {}
    for m in ("rna", "atac"):  # a cell without data gets no confident membership
        C[m] = p[m].C
        if empty[m].any():
            C[m] = C[m].copy()
            C[m][empty[m]] = 1.0 / K
            logger.info("%d %s cells have no counts: uniform membership (empty_%s)", int(empty[m].sum()), m, m)
    column_clusters = None
    if opts.resolution is not None:
        from .clustering import merge_columns

        keep = {m: ~empty[m] for m in ("rna", "atac")}  # cells without data take no part in the merge
        column_clusters = merge_columns(programs["rna"][keep["rna"]], programs["atac"][keep["atac"]],
                                        C["rna"][keep["rna"]].argmax(axis=1), C["atac"][keep["atac"]].argmax(axis=1),
                                        n_shared, n_rna_only, n_atac_only, resolution=opts.resolution,
                                        n_threads=threads)
    cells = {m: {"C": C[m], "programs": programs[m], "b": p[m].b, "empty": empty[m]} for m in ("rna", "atac")}
    return _make_result(opts, outcome, cells, column_clusters, prep.coverage, prep.rna_constants, t_start)

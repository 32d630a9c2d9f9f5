"""Mosaic integration: :func:`fit_mosaic` and its result, :class:`MosaicResult`.

A mosaic is several batches of cells, each measured in RNA, ATAC or both
(paired multiome cells), fitted as one joint tri-factorisation (docs/mosaic.md):
each batch has one membership matrix shared by its modalities, each (batch,
modality) block its own association S and cell biases, each modality one set
of feature clusters and feature biases shared by all batches. The two-matrix
:func:`fastjmt.fit` is the mosaic of one RNA batch and one ATAC batch, through
the same epoch (:func:`fastjmt.driver.block_epoch`).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import preprocess as pp
from .options import FitOptions, check_options

logger = logging.getLogger("fastjmt")

__all__ = ["fit_mosaic", "MosaicResult"]

#: options of :func:`fastjmt.fit` that a mosaic fit does not take (and why, in the error)
_NOT_FOR_MOSAIC = {
    "n_rna_only": "give each batch's private clusters as private={batch: n}",
    "n_atac_only": "give each batch's private clusters as private={batch: n}",
    "client": "mosaic fits run in memory (Dask inputs: fastjmt.fit)",
    "persist": "mosaic fits run in memory (Dask inputs: fastjmt.fit)",
    "out": "mosaic fits run in memory (Dask inputs: fastjmt.fit)",
    "start_cells": "mosaic fits run in memory (Dask inputs: fastjmt.fit)",
}

_MODALITIES = ("rna", "atac")


@dataclass
class MosaicResult:
    """The result of :func:`fit_mosaic`. Per batch (keyed by the batch names given), per modality, and shared.

    Attributes
    ----------
    batches : list of str
        The batch names, in the order given.
    memberships : dict of str to ndarray, shape (n_cells_b, K)
        Each batch's cell memberships C_b (rows sum to 1), shared by its modalities.
    programs : dict of str to dict of str to ndarray, shape (n_cells_b, K)
        ``programs[batch][modality]``: program activities ``(X V) / (X 1)`` of the batch's cells in that
        modality's feature clusters (as :attr:`fastjmt.JMTResult.programs_rna`).
    S : dict of str to dict of str to ndarray, shape (K, K)
        ``S[batch][modality]``: each block's cell-cluster × feature-cluster association.
    b : dict of str to dict of str to ndarray, shape (n_cells_b,)
        Each block's cell biases.
    C_genes, C_regions : ndarray, shapes (n_genes, K), (n_regions, K)
        Feature memberships, shared by every batch.
    b_genes, b_regions : ndarray
        Feature biases, shared by every batch.
    empty : dict of str to ndarray of bool
        Cells without any count in any of their batch's modalities (uniform membership, no cluster: −1).
    n_shared : int
    private : dict of str to int
        Private columns per batch; columns are ``0 … n_shared − 1`` shared, then each batch's private ones in
        the order of ``private``.
    column_clusters : ndarray of int64, shape (K,) or None
        The column merge (:func:`fastjmt.merge_columns` over every batch's cells); None with ``resolution=None``.
    loss_history : ndarray, shape (n_iter + 1, 7)
        Each term (``fastjmt.objective.TERMS``) and the total, per epoch (row 0: the start).
    n_iter, converged, stop_reason, seed, fit_seconds, restart_losses, interrupted, n_undone, answer_change
        As in :class:`fastjmt.JMTResult`.
    link_coverage : dict
        The gene activity's coverage (:func:`fastjmt.link_coverage`), as in :class:`fastjmt.JMTResult`.
    """

    batches: list
    memberships: dict
    programs: dict
    S: dict
    b: dict
    C_genes: np.ndarray
    C_regions: np.ndarray
    b_genes: np.ndarray
    b_regions: np.ndarray
    empty: dict
    n_shared: int
    private: dict
    column_clusters: Optional[np.ndarray]
    loss_history: np.ndarray
    n_iter: int
    converged: bool
    stop_reason: str
    seed: int
    fit_seconds: float
    restart_losses: np.ndarray
    interrupted: bool
    n_undone: int
    answer_change: tuple = ()
    resolution: Optional[float] = 1.0
    link_coverage: Optional[dict] = None
    _column_owner: np.ndarray = field(default=None, repr=False)

    @property
    def K(self) -> int:
        return self.C_genes.shape[1]

    @property
    def loss(self) -> float:
        return float(self.loss_history[-1, -1])

    @property
    def columns(self) -> dict:
        """Each batch's argmax column per cell (int64; −1 for empty cells): the paper's clusters."""
        out = {}
        for k in self.batches:
            c = self.memberships[k].argmax(axis=1).astype(np.int64)
            c[self.empty[k]] = -1
            out[k] = c
        return out

    @property
    def labels(self) -> dict:
        """Each batch's recommended cell clusters: the argmax columns merged by :attr:`column_clusters`
        (the columns themselves with ``resolution=None``). The same id is the same cluster in every batch;
        empty cells get −1."""
        out = {}
        for k, c in self.columns.items():
            lab = c.copy() if self.column_clusters is None else np.where(c >= 0, self.column_clusters[c], -1)
            out[k] = lab
        return out

    @property
    def labels_genes(self) -> np.ndarray:
        return self.C_genes.argmax(axis=1)

    @property
    def labels_regions(self) -> np.ndarray:
        return self.C_regions.argmax(axis=1)

    def relabel(self, resolution: Optional[float] = 1.0, n_neighbors: int = 15,
                n_threads: Optional[int] = None) -> "MosaicResult":
        """Merge the columns again at another ``resolution`` (None: the argmax columns); in place, returns self.

        Raises
        ------
        ValueError
            On a resolution that is not positive.
        """
        from .validation import check_positive

        if resolution is None:
            self.column_clusters, self.resolution = None, None
            return self
        resolution = check_positive(resolution, "resolution")
        self.column_clusters = _merge(self, resolution, n_neighbors, n_threads)
        self.resolution = resolution
        return self


def _merge(res: MosaicResult, resolution: float, n_neighbors: int, n_threads) -> np.ndarray:
    """The column merge of a mosaic: every cell with RNA by its RNA programs (standardised together), the
    ATAC-only cells by their ATAC programs; private columns merge only within their batch."""
    from .clustering import merge_column_groups

    sets = {m: ([], []) for m in _MODALITIES}
    for k in res.batches:
        m = "rna" if "rna" in res.programs[k] else "atac"
        keep = ~res.empty[k]
        sets[m][0].append(res.programs[k][m][keep])
        sets[m][1].append(res.memberships[k][keep].argmax(axis=1).astype(np.int64))
    programs = [np.vstack(P) for P, _ in sets.values() if P]
    columns = [np.concatenate(c) for P, c in sets.values() if P]
    return merge_column_groups(programs, columns, res._column_owner, resolution, n_neighbors, n_threads)


def _check_batches(batches, gene_activity, n_shared, private, preprocess: bool):
    """Validate the mosaic's inputs before any work; returns ``(n_shared, private, K)``."""
    from .validation import _values, check_count, check_matrix

    if not isinstance(batches, dict):
        raise TypeError('batches must be a dict {batch name: {"rna": matrix, "atac": matrix}}, got '
                        f"{type(batches).__name__}")
    if not batches:
        raise ValueError('batches is empty: pass at least one batch with RNA and one with ATAC, e.g. '
                         '{"multiome": {"rna": X, "atac": Y}}')
    ga = check_matrix(gene_activity, "gene_activity")
    n_genes, n_regions = ga
    seen, rows, cols = set(), {}, {}
    for k, mods in batches.items():
        if not isinstance(k, str):
            raise TypeError(f"batch names must be strings, got {k!r}")
        if not k:
            raise ValueError("a batch is named '' (the empty string): give every batch a name")
        if not isinstance(mods, dict) or not mods or set(mods) - set(_MODALITIES):
            raise ValueError(f'batches[{k!r}] must be a dict with "rna" and/or "atac" matrices, got '
                             f"{sorted(mods) if isinstance(mods, dict) else type(mods).__name__}")
        n = None
        for m, X in mods.items():
            name = f"batches[{k!r}][{m!r}]"
            shape = check_matrix(X, name, allow_negative=not preprocess, require_nonzero=True)
            cols.setdefault(m, []).append((name, shape))
            if n is not None and shape[0] != n:
                raise ValueError(f"batches[{k!r}] pairs {n} RNA cells with {shape[0]} ATAC cells: a paired batch "
                                 "holds the same cells in both modalities, in the same row order")
            n = shape[0]
            rows[(k, m)] = n
            seen.add(m)
    first = {m: v[0][1][1] for m, v in cols.items()}
    if ga[::-1] == (first.get("rna"), first.get("atac")) and ga != (first.get("rna"), first.get("atac")):
        raise ValueError(f"gene_activity must be genes × regions = ({first['rna']}, {first['atac']}), got {ga}: it "
                         "looks transposed: pass gene_activity.T")
    for m, blocks in cols.items():
        want = n_genes if m == "rna" else n_regions
        for name, shape in blocks:
            if shape[1] != want:
                hint = " (transposed? rows must be cells)" if shape[0] == want else ""
                raise ValueError(f"{name} has {shape[1]} columns but gene_activity {ga} has {want} "
                                 f"{'genes (rows)' if m == 'rna' else 'regions (columns)'}{hint}")
    values, _, _ = _values(gene_activity, "gene_activity")
    if not np.any(values):
        raise ValueError("gene_activity has no nonzero link: nothing bridges the RNA genes and the ATAC regions, and "
                         "the fit would integrate nothing. Check how the links were built (gene names, contig names "
                         "and genome build of the annotation; fastjmt.genome.check_links reports the coverage)")
    names = [_block_name(k, m, mods) for k, mods in batches.items() for m in mods]
    if len(set(names)) < len(names):
        clash = sorted(n for n in set(names) if names.count(n) > 1)
        raise ValueError(f"batch names clash with a paired batch's blocks ({clash}): rename the batch called "
                         f"{clash[0]!r}")
    if seen != set(_MODALITIES):
        missing = (set(_MODALITIES) - seen).pop()
        raise ValueError(f"the mosaic has no {missing.upper()} block: fit_mosaic needs at least one batch with RNA "
                         "and one with ATAC (the gene activity links them)")
    n_shared = check_count(n_shared, "n_shared", 1)
    private = {} if private is None else private
    if not isinstance(private, dict):
        raise TypeError(f"private must be a dict {{batch name: number of private clusters}}, got {private!r}")
    unknown = [k for k in private if k not in batches]
    if unknown:
        raise ValueError(f"private names batches that are not in batches: {unknown}; batches are {list(batches)}")
    private = {k: check_count(v, f"private[{k!r}]", 0) for k, v in private.items()}
    private = {k: v for k, v in private.items() if v}
    K = n_shared + sum(private.values())
    for m in _MODALITIES:
        cells = sum(rows[(k, m)] for k in batches if (k, m) in rows)
        if cells < K:
            raise ValueError(f"the mosaic has {cells} {m.upper()} cells, fewer than the K = {K} clusters "
                             "(n_shared + the private ones); lower the cluster counts")
    return n_shared, private, K


def fit_mosaic(batches: dict, gene_activity, *, n_shared: int, private: Optional[dict] = None,
               **options) -> MosaicResult:
    """Fit a mosaic: batches of RNA, ATAC or paired (multiome) cells in one joint tri-factorisation.

    The model (docs/mosaic.md) generalises scJMT's: each batch ``b`` has one membership matrix ``C_b``
    (cells × K) shared by its modalities, which is what ties a paired cell's RNA to its ATAC; each
    block (batch, modality) its own association ``S_b,m`` and cell biases; each modality one feature
    membership matrix and feature biases, shared by every batch. The association matrices are coupled
    by ``−a3 / (B − 1) Σ_{s<t} cos(S_s, S_t)`` over all B blocks (the mean over each one's partners),
    the feature clusters by ``−a4 cos(C_genes, A C_regions)`` as in :func:`fastjmt.fit`, and private
    columns by the mask term: a batch's cells are kept out of other batches' private columns
    (``private``). The mosaic of one RNA batch and one ATAC batch is :func:`fastjmt.fit` itself (same
    epoch, same start, same result: bitwise, with ``private={rna_batch: n_rna_only, atac_batch: n_atac_only}``
    in that order, the column order of :func:`fastjmt.fit`; cells without counts get label −1 here).

    Parameters
    ----------
    batches : dict of str to dict
        ``{name: {"rna": X, "atac": Y}}`` with either or both modalities per batch: ``X`` cells × genes
        (raw counts), ``Y`` cells × regions (counts or binary); scipy sparse or dense. In a paired batch
        row ``i`` of ``X`` and of ``Y`` is the same cell. Never modified.
    gene_activity : sparse or dense, shape (n_genes, n_regions)
        Gene × region links, as for :func:`fastjmt.fit`; every RNA block has its genes, every ATAC block
        its regions.
    n_shared : int
        Clusters that any batch may use.
    private : dict of str to int, optional
        Clusters only one batch's cells may use: ``{batch: n}``. Columns: ``0 … n_shared − 1`` shared,
        then each batch's private ones in the order of this dict. The two-matrix fit's ``n_rna_only`` /
        ``n_atac_only`` are ``private={rna_batch: n_rna_only, atac_batch: n_atac_only}``.
    **options
        Any option of :func:`fastjmt.fit` (weights ``a1`` … ``a6``, ``max_iter``, ``stop``, ``init``,
        ``learning_rate``, ``batch_cells``, ``random_state``, ``n_init``, ``n_threads``, ``dtype``,
        ``preprocess``, ``resolution``, ``low_memory``, ``verbose``, ``callback``, …) with the same
        defaults and meaning (``checkpoint``, ``checkpoint_every`` and ``resume`` too), except the Dask
        options (a clear error). ``a1`` weighs every
        ATAC block, ``a2`` every RNA block, each a mean over its own entries. ``callback(it, terms, params)``
        gets a :class:`fastjmt.problem.MosaicParams` as ``params`` (``params.cells[batch].C``,
        ``params.features["rna"].Cf``, ``params.blocks[...]``), not the two-matrix dict.

    Returns
    -------
    MosaicResult
        ``result.labels[batch]`` are the recommended cell clusters, comparable across batches.

    Raises
    ------
    TypeError, ValueError
        On inputs of the wrong type or shape (naming the batch and modality), a mosaic without an RNA or
        an ATAC block, paired blocks with different cell counts, ``private`` naming unknown batches,
        an option fit_mosaic does not take, or bad option values; all before any work.

    Notes
    -----
    Preprocessing as :func:`fastjmt.fit`: each RNA block library-size normalised (to the median library
    size of all RNA cells) and log1p-transformed, divided by the largest value over all RNA blocks; ATAC
    binarised; gene activity rows scaled to sum 1. Ctrl-C finishes the epoch and returns the state so far
    (``result.interrupted``). Measured on the SNARE-seq mosaic and simulated mosaics: docs/mosaic.md.
    """
    t_start = time.perf_counter()
    bad = sorted(set(options) & set(_NOT_FOR_MOSAIC))
    if bad:
        raise TypeError(f"fit_mosaic does not take {bad[0]}=: {_NOT_FOR_MOSAIC[bad[0]]}")
    unknown = sorted(set(options) - set(FitOptions.names()))
    if unknown:
        raise TypeError(f"fit_mosaic got an unexpected option {unknown[0]!r}; it takes fastjmt.fit's options")
    opts = check_options(FitOptions(n_shared=n_shared, **options))
    n_shared, private, K = _check_batches(batches, gene_activity, n_shared, private, opts.preprocess)
    prep = _prepare(batches, gene_activity, n_shared, private, K, opts)
    outcome = _run(prep, opts)
    return _result(prep, outcome, opts, t_start)


@dataclass
class _PreparedMosaic:
    mosaic: object
    matrices: dict  # block name -> prepared CSR
    A: object
    n_shared: int
    private: dict
    empty: dict  # batch -> bool per cell
    order: list  # batch names as given
    coverage: object


def _block_name(batch: str, modality: str, mods) -> str:
    return batch if len(mods) == 1 else f"{batch}:{modality}"


def _prepare(batches: dict, gene_activity, n_shared: int, private: dict, K: int, opts) -> _PreparedMosaic:
    """Copy every matrix to canonical CSR of ``opts.dtype``, preprocess the copies, build the blocks."""
    from .api import check_coverage
    from .problem import Block, Mosaic, modality, transpose

    dt = opts.dtype
    A = pp.to_csr(gene_activity, dtype=dt, name="gene_activity")
    coverage = check_coverage(A)
    mats = {}
    for k, mods in batches.items():
        for m in _MODALITIES:
            if m in mods:
                mats[(k, m)] = pp.to_csr(mods[m], dtype=dt, name=f"batches[{k!r}][{m!r}]")
    empty = {}
    for k, mods in batches.items():
        e = None
        for m in mods:
            em = np.diff(mats[(k, m)].indptr) == 0
            e = em if e is None else e & em
        empty[k] = e
    if opts.preprocess:
        from .validation import not_counts

        for (k, m) in mats:
            why = not_counts(batches[k][m]) if m == "rna" else ""
            if why:
                warnings.warn(f"batches[{k!r}]['rna'] does not look like raw counts: {why}. fit_mosaic normalises "
                              "and log-transforms RNA (preprocess=True); pass the raw counts (e.g. a 'counts' "
                              "layer) or preprocess=False", UserWarning, stacklevel=4)
        rna_keys = [key for key in mats if key[1] == "rna"]
        if len(rna_keys) == 1:
            mats[rna_keys[0]] = pp.preprocess_rna(mats[rna_keys[0]], copy=False)
        else:  # one scale for every RNA block: the median library size and the largest value over all of them
            parts = [pp.library_and_row_max(mats[key]) for key in rna_keys]
            const = pp.rna_constants_of(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            for key in rna_keys:
                mats[key] = pp.preprocess_rna(mats[key], copy=False, target_sum=const["target_sum"],
                                              max_value=const["max_value"])
        for key in mats:
            if key[1] == "atac":
                mats[key] = pp.preprocess_atac(mats[key], copy=False)
        A = pp.preprocess_gene_activity(A, copy=False)

    # columns: shared, then each batch's private ones in the order of `private`
    offset, col = {}, n_shared
    for k, n in private.items():
        offset[k] = np.arange(col, col + n, dtype=np.int64)
        col += n
    kinds = {k: ("paired" if len(mods) == 2 else next(iter(mods))) for k, mods in batches.items()}
    order = [k for kind in ("atac", "paired", "rna") for k in batches if kinds[k] == kind]
    blocks, batch_info, matrices = [], {}, {}
    weights = opts.weights
    for k in order:
        masked = np.concatenate([offset[o] for o in private if o != k] or [np.zeros(0, np.int64)]).astype(np.int64)
        n_k = None
        for m in ("atac", "rna"):
            if m in batches[k]:
                name = _block_name(k, m, batches[k])
                X = mats[(k, m)]
                matrices[name] = X
                blocks.append(Block(name, k, m, modality(X, weights["a1" if m == "atac" else "a2"], masked,
                                                            opts.low_memory)))
                n_k = X.shape[0]
        batch_info[k] = (n_k, masked)
    At = transpose(A)
    mosaic = Mosaic(blocks, batch_info, (A.indptr, A.indices, A.data), (At.indptr, At.indices, At.data),
                    A.shape[0], A.shape[1], K, weights["a3"], weights["a4"], weights["a5"], weights["a6"],
                    np.dtype(dt))
    return _PreparedMosaic(mosaic, matrices, A, n_shared, private, empty, list(batches), coverage)


def _run(prep: _PreparedMosaic, opts):
    """The restarts, with threads, Ctrl-C and the verbose logger set up and restored."""
    from ._threads import fit_threads, resolve_n_threads
    from .api import _ctrl_c_finishes_epoch, _seeds, _verbose_logging
    from .driver import MosaicEngine, fit_restarts, schedule_of
    from .initialize import initialize_mosaic

    sched = schedule_of(opts)

    def start(rng):
        return initialize_mosaic(prep.mosaic, prep.matrices, prep.A, prep.n_shared, prep.private, opts.init, rng,
                                 opts.init_scale, opts.weights, opts.low_memory)

    engine = MosaicEngine(prep.mosaic, sched, start)
    seeds = _seeds(opts)
    fingerprint = _fingerprint(prep, opts, seeds)
    with _verbose_logging(opts), fit_threads(resolve_n_threads(opts.n_threads)), \
            _ctrl_c_finishes_epoch() as interrupted:
        return fit_restarts(None, sched, None, seeds, fingerprint, checkpoint=opts.checkpoint,
                            checkpoint_every=opts.checkpoint_every, resume=opts.resume,
                            should_stop=interrupted.is_set, engine=engine)


def _fingerprint(prep: _PreparedMosaic, opts, seeds: list) -> dict:
    """What a checkpoint of this mosaic must match: every block's prepared matrix (shape, nonzeros, sums) and the
    gene activity's, the batches and their layout, weights, dtype, the options that change the fit, the seeds."""
    from .api import _fingerprint_options
    from .checkpoint import fingerprint_of

    blocks = prep.mosaic.blocks
    mats = [prep.matrices[b.name] for b in blocks] + [prep.A]
    sums = [x for b in blocks for x in (b.data.sq_norm, float(b.data.row_sums.sum()))]
    layout = [prep.n_shared, [[k, n] for k, n in prep.private.items()],
              [[b.batch, b.modality] for b in blocks]]
    from .checkpoint import digest

    out = fingerprint_of([list(M.shape) for M in mats], [int(M.nnz) for M in mats], sums, layout, opts.weights,
                         opts.dtype, _fingerprint_options(opts), seeds)
    out["kind"] = "fit_mosaic"
    if opts.checkpoint is not None or opts.resume is not None:  # the inputs' contents, not only their sums
        out["digest"] = digest(mats)
    return out


def _result(prep: _PreparedMosaic, outcome, opts, t_start: float) -> MosaicResult:
    from ._threads import resolve_n_threads
    from .api import warn_how_it_ended
    from .objective import program_activity

    warn_how_it_ended(outcome, opts, stacklevel=4, name="fastjmt.fit_mosaic")
    best = outcome.best
    mp, mosaic = best.params, prep.mosaic
    K = mosaic.K
    memberships, programs, S, b = {}, {}, {}, {}
    for k in prep.order:
        C = mp.cells[k].C
        if prep.empty[k].any():
            C = C.copy()
            C[prep.empty[k]] = 1.0 / K
        memberships[k] = C
        programs[k], S[k], b[k] = {}, {}, {}
        for blk in mosaic.blocks_of_batch(k):
            programs[k][blk.modality] = program_activity(blk.data, mp.features[blk.modality].Cf)
            S[k][blk.modality] = mp.blocks[blk.name].S
            b[k][blk.modality] = mp.blocks[blk.name].b
    owner = np.zeros(K, dtype=np.int64)
    col = prep.n_shared
    for i, (k, n) in enumerate(prep.private.items()):
        owner[col:col + n] = i + 1
        col += n
    f = mp.features
    res = MosaicResult(
        batches=list(prep.order), memberships=memberships, programs=programs, S=S, b=b,
        C_genes=f["rna"].Cf, C_regions=f["atac"].Cf, b_genes=f["rna"].c, b_regions=f["atac"].c,
        empty=prep.empty, n_shared=prep.n_shared, private=dict(prep.private), column_clusters=None,
        loss_history=best.history, n_iter=best.n_iter, converged=best.converged, stop_reason=best.stop_reason,
        seed=best.seed, fit_seconds=0.0, restart_losses=np.asarray(outcome.losses),
        interrupted=outcome.interrupted, n_undone=best.undone, answer_change=tuple(float(x) for x in best.change),
        resolution=opts.resolution, link_coverage=prep.coverage.as_dict(), _column_owner=owner,
    )
    if opts.resolution is not None:
        res.column_clusters = _merge(res, opts.resolution, 15, resolve_n_threads(opts.n_threads))
    res.fit_seconds = time.perf_counter() - t_start
    return res

"""A small, realistic simulator of unpaired scRNA-seq + scATAC-seq with ground truth.

The generative story:

* cell types: ``n_shared`` seen in both modalities, ``n_rna_only`` only in RNA,
  ``n_atac_only`` only in ATAC;
* regions on a virtual genome have a baseline accessibility; each type opens
  a random ~8 % of regions and closes ~4 % (logit shift ``± 2·separation``);
* the gene activity matrix links each gene to 0–3 consecutive regions;
* a gene's log expression in a type follows the mean accessibility change of
  its linked regions (weight ``1.5·separation``) plus type-specific
  differential expression of ~5 % of genes;
* RNA counts are negative binomial (gamma–Poisson, ``dispersion``) around a
  log-normal library size; ATAC is Bernoulli accessibility scaled by a
  log-normal per-cell depth, i.e. 0/1 with realistic sparsity.

Counts are drawn in row chunks and stored sparse, so memory stays
O(nnz + chunk × features) at any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit


@dataclass
class SimulatedData:
    """Simulated unpaired RNA and ATAC data with ground truth.

    Attributes
    ----------
    rna : scipy.sparse.csr_matrix, shape (n_rna, n_genes)
        Integer counts.
    atac : scipy.sparse.csr_matrix, shape (n_atac, n_regions)
        0/1 accessibility.
    gene_activity : scipy.sparse.csr_matrix, shape (n_genes, n_regions)
        Binary region → gene links (the true ones).
    rna_labels, atac_labels : ndarray of str
        True cell type of every cell (``"type_0"`` …; shared types share names).
    n_shared, n_rna_only, n_atac_only : int
        The layout the data was made with (pass these to :func:`fastjmt.fit`).
    gene_programs, region_programs : ndarray of int64, shapes (n_genes,) and (n_regions,)
        Ground-truth feature programs: the type (index in the column order of
        the fit, as in the labels ``"type_<i>"``) whose cells up-regulate the
        gene (explicit differential expression) or open the region, for the
        features that exactly one type marks that way; −1 for the others
        (background, or marked by several types). Score a fit's feature
        clusters against them with :func:`fastjmt.adjusted_rand_index` on the
        features ``>= 0``.
    """

    rna: sp.csr_matrix
    atac: sp.csr_matrix
    gene_activity: sp.csr_matrix
    rna_labels: np.ndarray
    atac_labels: np.ndarray
    n_shared: int
    n_rna_only: int
    n_atac_only: int
    gene_programs: np.ndarray = None
    region_programs: np.ndarray = None


def _single_owner(marked: np.ndarray) -> np.ndarray:
    """Per feature, the one type (row) that marks it, or −1 when none or several do."""
    owner = np.argmax(marked, axis=0).astype(np.int64)
    owner[marked.sum(axis=0) != 1] = -1
    return owner


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _chunks(n, p, budget=4_000_000):
    step = max(1, budget // max(p, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


@njit(cache=True)
def _alias_table(probs):
    """Walker/Vose alias tables (one row per distribution) for O(1) categorical draws."""
    T, p = probs.shape
    accept = np.empty((T, p))
    alias = np.zeros((T, p), dtype=np.int64)
    small = np.empty(p, dtype=np.int64)
    large = np.empty(p, dtype=np.int64)
    for t in range(T):
        total = probs[t].sum()
        q = probs[t] * (p / total)
        ns = nl = 0
        for i in range(p):
            if q[i] < 1.0:
                small[ns] = i
                ns += 1
            else:
                large[nl] = i
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            s_ = small[ns]
            l_ = large[nl - 1]
            accept[t, s_] = q[s_]
            alias[t, s_] = l_
            q[l_] = q[l_] + q[s_] - 1.0
            if q[l_] < 1.0:
                nl -= 1
                small[ns] = l_
                ns += 1
        for i in range(nl):
            accept[t, large[i]] = 1.0
        for i in range(ns):
            accept[t, small[i]] = 1.0
    return accept, alias


def _sample_sparse(rng, probs, labels, totals, p, burst, dtype, chunk=5000):
    """Rows of counts from categorical draws: row i gets ``totals[i]`` draws from ``probs[labels[i]]``,
    each adding ``burst`` to the drawn column. O(draws) time and memory per chunk of rows."""
    accept, alias = _alias_table(np.ascontiguousarray(probs, dtype=np.float64))
    indptr = [np.zeros(1, np.int64)]
    indices, data = [], []
    offset = 0
    for a in range(0, labels.shape[0], chunk):
        b = min(labels.shape[0], a + chunk)
        tot = totals[a:b]
        cell = np.repeat(np.arange(b - a, dtype=np.int64), tot)
        lab = labels[a:b][cell]
        col = rng.integers(0, p, size=cell.shape[0])
        reject = rng.random(cell.shape[0]) >= accept[lab, col]
        col[reject] = alias[lab[reject], col[reject]]
        keys, counts = np.unique(cell * p + col, return_counts=True)
        rows = keys // p
        indices.append((keys % p).astype(np.int32 if p < 2**31 else np.int64))
        data.append((counts * burst).astype(dtype))
        indptr.append(offset + np.cumsum(np.bincount(rows, minlength=b - a)))
        offset += keys.shape[0]
    indptr = np.concatenate(indptr)
    idx_dtype = np.int32 if offset < 2**31 else np.int64
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr.astype(idx_dtype)),
                         shape=(labels.shape[0], p))


def _type_labels(types, n, proportions):
    """``n`` type labels in a fixed order (shuffled by the caller): evenly spread, or in the given proportions."""
    if proportions is None:
        return types[np.arange(n) % types.size]
    w = proportions[types] / proportions[types].sum()
    counts = np.floor(w * n).astype(np.int64)
    counts[np.argsort(-(w * n - counts), kind="stable")[: n - counts.sum()]] += 1  # largest remainders
    counts = np.maximum(counts, 1) if n >= types.size else counts
    counts[np.argmax(counts)] -= counts.sum() - n
    return np.repeat(types, counts)


def _add_atac_noise(rng, R, fraction):
    """Move ``fraction`` of every cell's open regions to uniformly random regions (nnz per cell kept)."""
    if fraction <= 0:
        return R
    R = R.tocsr(copy=True)
    move = rng.random(R.nnz) < fraction
    R.indices[move] = rng.integers(0, R.shape[1], size=int(move.sum())).astype(R.indices.dtype)
    R.has_sorted_indices = False
    R.sum_duplicates()  # a random region may hit one already open: keep it a single 1
    R.data[:] = 1
    return R


def simulate(
    n_rna: int = 2000,
    n_atac: int = 2000,
    n_genes: int = 1000,
    n_regions: int = 3000,
    n_shared: int = 5,
    n_rna_only: int = 0,
    n_atac_only: int = 0,
    separation: float = 1.0,
    rna_depth: float = 1500.0,
    atac_accessibility: float = 0.08,
    dispersion: float = 0.3,
    random_state: int | None = 0,
    dtype=np.float32,
    sampling: str = "auto",
    proportions=None,
    atac_noise: float = 0.0,
    cell_seed: int | None = None,
) -> SimulatedData:
    """Simulate unpaired RNA and ATAC cells from shared and modality-specific types.

    Parameters
    ----------
    n_rna, n_atac : int
        Cells per modality (disjoint cells: the data are unpaired).
    n_genes, n_regions : int
        Features.
    n_shared, n_rna_only, n_atac_only : int
        Types in both modalities, only in RNA, only in ATAC. Cells are spread
        evenly over the types of their modality.
    separation : float
        How different types are (1 = clear clusters; 0.3–0.5 = hard).
    rna_depth : float
        Mean UMI count per RNA cell.
    atac_accessibility : float
        Baseline probability that a region is open in a cell.
    dispersion : float
        Negative binomial overdispersion of the RNA counts.
    random_state : int or None
        Seed.
    dtype : numpy dtype
        Data type of the returned matrices.
    sampling : {"auto", "dense", "sparse"}
        ``"dense"`` draws every cell × feature entry (exact model, in row chunks);
        ``"sparse"`` draws only what becomes nonzero, in O(nnz): ATAC as a
        Poisson number of distinct open regions per cell drawn in proportion to
        their accessibility (exact in the limit of small accessibilities), RNA as
        transcriptional bursts of ``round(1 + 1 / dispersion)`` molecules at
        genes drawn in proportion to expression (overdispersed counts).
        ``"auto"`` uses ``"sparse"`` when a modality has more than 2 × 10⁸
        entries (atlas sizes), else ``"dense"``.
    proportions : sequence of float, optional
        Relative abundance of each type (length ``n_shared + n_rna_only +
        n_atac_only``, in the column order of the fit), applied in both
        modalities: e.g. ``[1, 1, 1, 1, 0.1]`` makes the last shared type rare.
        Default: types equally abundant.
    atac_noise : float, default 0
        Noisier ATAC: this fraction of each ATAC cell's open regions is moved
        to regions drawn uniformly at random (same number of nonzeros,
        weaker signal).
    cell_seed : int, optional
        Draw the cells (labels, counts) from a stream of their own, seeded by
        ``(random_state, cell_seed)``, after the types and the gene activity
        come from ``random_state`` as usual: calls that differ only in
        ``cell_seed`` give new cells of the same types, e.g. the row chunks of
        an atlas too large to simulate at once (``benchmarks/atlas_dask.py``).

    Returns
    -------
    SimulatedData
    """
    for name, v in (("n_rna", n_rna), ("n_atac", n_atac), ("n_genes", n_genes), ("n_regions", n_regions)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if n_shared + n_rna_only < 1 or n_shared + n_atac_only < 1:
        raise ValueError("each modality needs at least one type")
    rng = np.random.default_rng(random_state)
    T = n_shared + n_rna_only + n_atac_only
    if proportions is not None:
        proportions = np.asarray(proportions, dtype=np.float64)
        if proportions.shape != (T,) or not np.all(np.isfinite(proportions)) or np.any(proportions <= 0):
            raise ValueError(f"proportions must be {T} positive numbers (one per type), got {proportions!r}")
    if not (0.0 <= float(atac_noise) < 1.0):
        raise ValueError(f"atac_noise must be in [0, 1), got {atac_noise!r}")
    rna_types = np.r_[np.arange(n_shared), n_shared + np.arange(n_rna_only)]
    atac_types = np.r_[np.arange(n_shared), n_shared + n_rna_only + np.arange(n_atac_only)]

    # accessibility logits per type
    base = rng.normal(np.log(atac_accessibility / (1 - atac_accessibility)), 0.8, size=n_regions)
    acc_logit = np.tile(base, (T, 1))
    opened = np.zeros((T, n_regions), dtype=bool)
    for t in range(T):
        u = rng.random(n_regions)
        opened[t] = u < 0.08
        acc_logit[t, u < 0.08] += 2.0 * separation
        acc_logit[t, (u >= 0.08) & (u < 0.12)] -= 2.0 * separation
    acc = _sigmoid(acc_logit)

    # gene activity: each gene linked to 0-3 consecutive regions
    n_links = rng.choice(4, size=n_genes, p=[0.1, 0.3, 0.4, 0.2])
    starts = rng.integers(0, n_regions, size=n_genes)
    rows = np.repeat(np.arange(n_genes), n_links)
    cols = np.concatenate([(s + np.arange(k)) % n_regions for s, k in zip(starts, n_links)]) if n_links.sum() else \
        np.zeros(0, dtype=np.int64)
    A = sp.csr_matrix((np.ones(rows.size, dtype=dtype), (rows, cols)), shape=(n_genes, n_regions))
    A.sum_duplicates()
    A.data[:] = 1

    # gene log-expression per type: driven by linked regions + own DE
    link_mean = (A @ (acc - acc.mean(axis=0)).T).T / np.maximum(n_links, 1)  # T × genes
    gene_base = rng.normal(0.0, 1.0, size=n_genes)
    log_expr = gene_base + 1.5 * separation * link_mean / max(acc.std(), 1e-12) * 0.5
    up = np.zeros((T, n_genes), dtype=bool)
    for t in range(T):
        u = rng.random(n_genes)
        up[t] = u < 0.03
        log_expr[t, u < 0.03] += 1.5 * separation
        log_expr[t, (u >= 0.03) & (u < 0.05)] -= 1.5 * separation
    expr = np.exp(log_expr - log_expr.max(axis=1, keepdims=True))
    expr /= expr.sum(axis=1, keepdims=True)

    if cell_seed is not None:
        rng = np.random.default_rng([int(random_state or 0), int(cell_seed)])
    rna_lab = _type_labels(rna_types, n_rna, proportions)
    atac_lab = _type_labels(atac_types, n_atac, proportions)
    rng.shuffle(rna_lab)
    rng.shuffle(atac_lab)

    if sampling not in ("auto", "dense", "sparse"):
        raise ValueError(f"sampling must be 'auto', 'dense' or 'sparse', got {sampling!r}")
    if sampling == "sparse" or (sampling == "auto" and max(n_rna * n_genes, n_atac * n_regions) > 2e8):
        burst = int(round(1 + 1 / dispersion))
        lib = rng.lognormal(np.log(rna_depth), 0.5, size=n_rna)
        G = _sample_sparse(rng, expr, rna_lab, rng.poisson(lib / burst), n_genes, burst, dtype)
        depth = rng.lognormal(0.0, 0.4, size=n_atac)
        acc_mean = acc.sum(axis=1)
        R = _sample_sparse(rng, acc, atac_lab, rng.poisson(depth * acc_mean[atac_lab]), n_regions, 1, dtype)
        R.data[:] = 1
        R = _add_atac_noise(rng, R, atac_noise)
        names = np.array([f"type_{t}" for t in range(T)])
        return SimulatedData(G, R, A, names[rna_lab], names[atac_lab], n_shared, n_rna_only, n_atac_only,
                             _single_owner(up), _single_owner(opened))

    blocks = []
    for a, b in _chunks(n_rna, n_genes):
        lib = rng.lognormal(np.log(rna_depth), 0.5, size=b - a)
        mu = lib[:, None] * expr[rna_lab[a:b]]
        lam = rng.gamma(1.0 / dispersion, mu * dispersion)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(dtype)))
    G = sp.vstack(blocks, format="csr")

    blocks = []
    for a, b in _chunks(n_atac, n_regions):
        depth = rng.lognormal(0.0, 0.4, size=b - a)
        p_open = _sigmoid(acc_logit[atac_lab[a:b]] + np.log(depth)[:, None])
        blocks.append(sp.csr_matrix((rng.random(p_open.shape) < p_open).astype(dtype)))
    R = sp.vstack(blocks, format="csr")
    R = _add_atac_noise(rng, R, atac_noise)

    names = np.array([f"type_{t}" for t in range(T)])
    return SimulatedData(G, R, A, names[rna_lab], names[atac_lab], n_shared, n_rna_only, n_atac_only,
                         _single_owner(up), _single_owner(opened))


@dataclass
class SimulatedMosaic:
    """A simulated mosaic (:func:`simulate_mosaic`) with ground truth, in :func:`fastjmt.fit_mosaic`'s layout.

    Attributes
    ----------
    batches : dict of str to dict of str to scipy.sparse.csr_matrix
        ``{batch: {"rna": counts, "atac": 0/1}}``; in a paired batch row ``i`` of both is one cell.
    gene_activity : scipy.sparse.csr_matrix, shape (n_genes, n_regions)
    labels : dict of str to ndarray of str
        True type of every cell of each batch (``"type_<i>"``, the same names across batches).
    n_shared : int
    private : dict of str to int
        Types present in one batch only (pass both to :func:`fastjmt.fit_mosaic`).
    gene_programs, region_programs : ndarray of int64
        As in :class:`SimulatedData`.
    """

    batches: dict
    gene_activity: sp.csr_matrix
    labels: dict
    n_shared: int
    private: dict
    gene_programs: np.ndarray = None
    region_programs: np.ndarray = None


def simulate_mosaic(
    design: dict = None,
    n_cells: int = 600,
    n_genes: int = 400,
    n_regions: int = 1200,
    n_shared: int = 5,
    private: dict = None,
    batch_effect: float = 0.0,
    random_state: int = 0,
    dtype=np.float32,
    **kwargs,
) -> SimulatedMosaic:
    """Simulate a mosaic: batches of paired (multiome), RNA-only and ATAC-only cells of the same types.

    The types, their expression and accessibility and the gene activity come
    from :func:`simulate` (one call, every type "shared" there); each batch then
    takes ``n_cells`` cells spread evenly over the shared types and its own
    private ones. A paired batch's cell ``i`` is an RNA cell and an ATAC cell of
    the same type (in this simulator a cell's RNA and ATAC are independent
    given its type, so pairing cells of one type is exact).

    Parameters
    ----------
    design : dict of str to {"paired", "rna", "atac"}, optional
        The batches and what each measures; default
        ``{"multiome": "paired", "rna": "rna", "atac": "atac"}``.
    n_cells : int or dict of str to int
        Cells per batch.
    n_genes, n_regions, n_shared : int
        As in :func:`simulate`.
    private : dict of str to int, optional
        Types present in one batch only: ``{batch: n}``.
    batch_effect : float, default 0
        Batch effects between batches: each batch gets its own capture efficiency per gene and per region,
        ``exp(N(0, batch_effect²))`` scaled to a maximum of 1, applied by binomial thinning of its counts
        (RNA) and by dropping open regions (ATAC). 0: none.
    random_state : int
        Seed.
    dtype : numpy dtype
    **kwargs
        Passed to :func:`simulate` (``separation``, ``rna_depth``, ``atac_noise``, …).

    Returns
    -------
    SimulatedMosaic

    Raises
    ------
    ValueError
        On an unknown batch kind, ``private`` naming unknown batches, or a mosaic without RNA or ATAC.
    """
    design = {"multiome": "paired", "rna": "rna", "atac": "atac"} if design is None else dict(design)
    private = {} if private is None else dict(private)
    kinds = {"paired": ("rna", "atac"), "rna": ("rna",), "atac": ("atac",)}
    for k, kind in design.items():
        if kind not in kinds:
            raise ValueError(f"design[{k!r}] must be 'paired', 'rna' or 'atac', got {kind!r}")
    if set(private) - set(design):
        raise ValueError(f"private names batches not in design: {sorted(set(private) - set(design))}")
    if not any("rna" in kinds[v] for v in design.values()) or not any("atac" in kinds[v] for v in design.values()):
        raise ValueError("a mosaic needs at least one batch with RNA and one with ATAC")
    sizes = {k: int(n_cells[k] if isinstance(n_cells, dict) else n_cells) for k in design}
    T = n_shared + sum(private.values())
    types, first = {}, n_shared
    for k in design:
        types[k] = np.r_[np.arange(n_shared), first + np.arange(private.get(k, 0))].astype(np.int64)
        first += private.get(k, 0)
    labels = {k: types[k][np.arange(sizes[k]) % types[k].size] for k in design}
    need = {m: np.zeros(T, np.int64) for m in ("rna", "atac")}
    for k, kind in design.items():
        for m in kinds[kind]:
            need[m] += np.bincount(labels[k], minlength=T)
    base = simulate(n_rna=T * int(need["rna"].max()), n_atac=T * int(need["atac"].max()), n_genes=n_genes,
                    n_regions=n_regions, n_shared=T, random_state=random_state, dtype=dtype, **kwargs)
    rng = np.random.default_rng([int(random_state), 7])
    pools = {}
    for m, lab in (("rna", base.rna_labels), ("atac", base.atac_labels)):
        idx = np.array([int(x.split("_")[1]) for x in lab])
        pools[m] = [list(np.flatnonzero(idx == t)) for t in range(T)]
    out = {}
    for k, kind in design.items():
        out[k] = {}
        for m in kinds[kind]:
            rows = np.array([pools[m][t].pop() for t in labels[k]], dtype=np.int64)
            X = (base.rna if m == "rna" else base.atac)[rows].tocsr()
            if batch_effect > 0:
                eff = np.exp(rng.normal(0.0, batch_effect, size=X.shape[1]))
                eff /= eff.max()
                keep = eff[X.indices]
                if m == "rna":
                    X.data = rng.binomial(X.data.astype(np.int64), keep).astype(dtype)
                else:
                    X.data = (rng.random(X.data.size) < keep).astype(dtype)
                X.eliminate_zeros()
            out[k][m] = X
    names = np.array([f"type_{t}" for t in range(T)])
    return SimulatedMosaic(out, base.gene_activity, {k: names[labels[k]] for k in design}, n_shared,
                           {k: v for k, v in private.items() if v}, base.gene_programs, base.region_programs)

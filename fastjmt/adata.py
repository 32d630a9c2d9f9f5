"""AnnData / MuData in and out (needs the ``anndata`` extra: ``pip install "fastjmt[anndata]"``).

:func:`fit_anndata` takes an RNA and an ATAC AnnData (or a MuData holding
both), aligns features by name, builds the gene activity matrix from
coordinates if asked, fits, and writes the results where scanpy users look:

============================  ==================================================
``.obsm["X_<key>"]``          cell memberships C (cells × K): nearly one-hot
                              after a fit, use it for cluster assignments
``.obsm["X_<key>_programs"]`` feature-program activities (cells × K, continuous):
                              use these for neighbours / UMAP / trajectories
``.obs["<key>_cluster"]``     the recommended cell clusters (``labels_rna`` /
                              ``labels_atac``: argmax columns merged),
                              categorical, the same names in both modalities;
                              missing for cells without counts
``.obs["<key>_column"]``      the argmax column of C (the paper's clusters)
``.obs["<key>_empty"]``       True for cells with no counts in the fitted matrix
``.varm["<key>_C"]``          feature memberships (features × K; NaN rows for
                              features left out of the fit)
``.uns["<key>"]``             S, loss history, n_iter, n_undone, converged, seed, layout,
                              ``column_clusters`` (column → cluster), ``resolution``
                              (−1: no merge), ``stop_reason``,
                              gene activity coverage (``link_coverage``) and the
                              fit's options (in both AnnData objects)
============================  ==================================================

With a MuData, the results are written into its two modality AnnData objects.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import numpy as np
import scipy.sparse as sp

from . import genome
from . import preprocess as pp
from .api import JMTResult, fit
from .validation import check_count, check_inputs, check_layout, check_matrix


def _require_anndata():
    try:
        import anndata  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('fit_anndata needs anndata: pip install "fastjmt[anndata]"') from exc


def read_matrix(adata, layer: Optional[str] = None, chunk_rows: int = 10_000) -> sp.csr_matrix:
    """The cells × features matrix of ``adata`` (``.X`` or a layer) as CSR, never densified whole.

    A backed AnnData (``anndata.read_h5ad(path, backed="r")``) is read in row
    chunks of ``chunk_rows``, each turned sparse before the next is read.
    """
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"layer {layer!r} not found; available: {list(adata.layers)}")
        X = adata.layers[layer]
    else:
        X = adata.X
    if X is None:
        raise ValueError("the AnnData has no .X; pass layer=")
    from .dask_driver import is_dask

    if is_dask(X):  # a lazily read AnnData (.X from anndata.experimental.read_elem_lazy): fitted on Dask
        return X
    if getattr(adata, "isbacked", False) and layer is None:
        n = adata.n_obs
        parts = []
        for a in range(0, n, chunk_rows):
            block = X[a:min(n, a + chunk_rows)]
            parts.append(sp.csr_matrix(block))
        return sp.vstack(parts, format="csr") if parts else sp.csr_matrix(adata.shape)
    return X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))


def _split(rna, atac, mod_rna, mod_atac):
    if atac is None:
        mods = getattr(rna, "mod", None)
        if mods is None:
            raise TypeError("pass an RNA and an ATAC AnnData, or one MuData with both modalities")
        missing = [m for m in (mod_rna, mod_atac) if m not in mods]
        if missing:
            raise KeyError(f"MuData has no modality {missing}; its modalities are {list(mods)}")
        return mods[mod_rna], mods[mod_atac], rna
    return rna, atac, None


def reissue(caught, skip_link_coverage: bool = False, stacklevel: int = 3) -> None:
    """Warnings recorded inside fastjmt, issued again at the line that called the public function
    (``stacklevel`` counted from the caller of this one); link-coverage warnings dropped when
    ``skip_link_coverage`` (already warned, with names, when the links were built)."""
    for w in caught:
        if skip_link_coverage and issubclass(w.category, genome.LinkCoverageWarning):
            continue
        warnings.warn(w.message, w.category, stacklevel=stacklevel)


def read_genes(path) -> genome.Intervals:
    """Gene coordinates from a path: a BED table (``.bed``/``.tsv``/``.txt``, optionally gzipped) or a GTF/GFF."""
    path = os.fspath(path)
    base = path[:-3] if path.endswith(".gz") else path
    return genome.read_bed(path) if base.endswith((".bed", ".tsv", ".txt")) else genome.read_gtf(path)


def _gene_activity(rna, atac, gene_activity, genes, promoter, max_distance, decay, gene_key="auto"):
    gnames, rnames = np.asarray(rna.var_names).astype(str), np.asarray(atac.var_names).astype(str)
    if gene_activity is not None:
        if isinstance(gene_activity, genome.GeneActivity):
            A = gene_activity.aligned(gnames, rnames, gene_key=gene_key)
            genome.check_links(A, gnames, rnames, linked_genes=gene_activity.genes,
                               linked_regions=gene_activity.regions, stacklevel=4)
            return A
        shape = (rna.n_vars, atac.n_vars)
        if tuple(gene_activity.shape) != shape:
            raise ValueError(f"gene_activity must be genes × regions {shape} in the order of rna.var_names × "
                             f"atac.var_names, got {tuple(gene_activity.shape)}; or pass a fastjmt.genome.GeneActivity "
                             "to align by name")
        return gene_activity
    if genes is None:
        raise ValueError("pass gene_activity= (a matrix or fastjmt.genome.GeneActivity) or genes= (a GTF/GFF/BED "
                         "path or fastjmt.genome.Intervals) to build it from coordinates")
    if isinstance(genes, (str, os.PathLike)):
        genes = read_genes(genes)
    regions = genome.parse_regions(rnames)
    ga = genome.gene_activity(genes, regions, promoter=promoter, max_distance=max_distance, decay=decay)
    A = ga.aligned(gnames, rnames, gene_key=gene_key)
    genome.check_links(A, gnames, rnames, linked_genes=ga.genes if gene_key != "id" or ga.gene_ids is None
                       else ga.gene_ids, stacklevel=4)
    return A


def fit_anndata(
    rna,
    atac=None,
    *,
    n_shared: int,
    n_rna_only: int = 0,
    n_atac_only: int = 0,
    gene_activity=None,
    genes=None,
    promoter: int = 2000,
    max_distance: int = 0,
    decay: float = 5000.0,
    rna_layer: Optional[str] = None,
    atac_layer: Optional[str] = None,
    n_top_genes: Optional[int] = None,
    gene_key: str = "auto",
    key: str = "jmt",
    obsm_key: Optional[str] = None,
    varm_key: Optional[str] = None,
    mod_rna: str = "rna",
    mod_atac: str = "atac",
    **fit_kwargs,
) -> JMTResult:
    """Fit scJMT on AnnData objects and write the results into them.

    Parameters
    ----------
    rna : AnnData or MuData
        RNA cells × genes (counts in ``.X`` or ``rna_layer``); or a MuData with
        modalities ``mod_rna`` and ``mod_atac`` (then ``atac`` is None). A
        matrix that is a Dask array (an AnnData read lazily, e.g. ``.X`` from
        ``anndata.experimental.read_elem_lazy``) is fitted on Dask
        (:func:`fastjmt.fit`'s ``client``, ``persist``, ``out`` in ``fit_kwargs``;
        docs/dask.md); ``n_top_genes`` then needs the genes chosen beforehand.
    atac : AnnData, optional
        ATAC cells × regions; region names like ``chr1:100-200`` when the gene
        activity is built from coordinates.
    n_shared, n_rna_only, n_atac_only : int
        The cluster layout (see :func:`fastjmt.fit`).
    gene_activity : sparse matrix or fastjmt.genome.GeneActivity, optional
        Genes × regions links; a ``GeneActivity`` is aligned to the var names.
    genes : path or fastjmt.genome.Intervals, optional
        Gene coordinates (GTF/GFF, or a BED table ``.bed``/``.tsv``/``.txt``) to
        build the gene activity by gene body + ``promoter`` overlap (and
        ``max_distance``/``decay``, see :func:`fastjmt.genome.gene_activity`).
        Contig names are harmonised (``chr1`` = ``1``); the coverage of the
        links is checked (:func:`fastjmt.genome.check_links`: an error without
        any link, a warning when few genes are linked) and stored in
        ``.uns[key]["link_coverage"]``.
    rna_layer, atac_layer : str, optional
        Layers to read instead of ``.X``.
    n_top_genes : int, optional
        Fit on the most variable genes only (others get NaN rows in ``.varm``).
        Selected after the inputs are validated.
    gene_key : {"auto", "name", "id"}
        How ``rna.var_names`` are matched to the annotation's genes: gene
        symbols, gene ids with the version stripped (``ENSG….3`` →
        ``ENSG…``, the 10x / CELLxGENE convention), or whichever matches more
        (default). Duplicated ``var_names`` all get their gene's links.
    key : str
        Prefix of the written keys.
    obsm_key, varm_key : str, optional
        Names of the memberships in ``.obsm`` / ``.varm`` (default ``X_<key>`` and
        ``<key>_C``; ``fastjmt.tl.jmt`` passes ``key`` itself, scanpy's ``key_added``).
    **fit_kwargs
        Passed to :func:`fastjmt.fit` (weights, ``max_iter``, ``random_state``…).

    Returns
    -------
    JMTResult
        Also written into the AnnData objects (see the module docstring).

    Raises
    ------
    ValueError, TypeError
        The same errors as :func:`fastjmt.fit`, raised on the matrices as
        given, before gene selection or any preprocessing; and a
        ``ValueError`` naming example gene and region names when the built
        gene activity has no link.

    Warns
    -----
    Those of :func:`fastjmt.fit` (``ConvergenceWarning``, low link coverage,
    non-count RNA), attributed to the line that called ``fit_anndata``.
    """
    _require_anndata()

    rna_ad, atac_ad, _ = _split(rna, atac, mod_rna, mod_atac)
    n_shared, n_rna_only, n_atac_only = check_layout(n_shared, n_rna_only, n_atac_only)
    K = n_shared + n_rna_only + n_atac_only
    if n_top_genes is not None:
        n_top_genes = check_count(n_top_genes, "n_top_genes", 1)
    preprocess = fit_kwargs.get("preprocess", True)
    G = read_matrix(rna_ad, rna_layer)
    R = read_matrix(atac_ad, atac_layer)
    from .dask_driver import is_dask

    lazy = is_dask(G) or is_dask(R)  # Dask arrays: fastjmt.fit checks them chunk by chunk (dask_driver)
    if not lazy:
        for X, name in ((G, "rna"), (R, "atac")):  # before the links are built
            check_matrix(X, name, allow_negative=not preprocess, require_nonzero=True)
    A = sp.csr_matrix(_gene_activity(rna_ad, atac_ad, gene_activity, genes, promoter, max_distance, decay,
                                     gene_key))
    if not lazy:
        check_inputs(G, R, A, K, preprocess=bool(preprocess))  # every check of fit, before gene selection
    gene_idx = np.arange(rna_ad.n_vars)
    if n_top_genes is not None and n_top_genes < rna_ad.n_vars and lazy:
        raise ValueError("n_top_genes needs the RNA in memory; with a lazily read (Dask) AnnData select the genes "
                         "first (e.g. scanpy.pp.highly_variable_genes on a subsample, then rna[:, genes]) and pass "
                         "n_top_genes=None")
    if n_top_genes is not None and n_top_genes < rna_ad.n_vars:
        gene_idx = pp.select_variable_genes(G, n_top_genes)
        G, A = G[:, gene_idx], A[gene_idx]
    built = gene_activity is None or isinstance(gene_activity, genome.GeneActivity)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(G, R, A, n_shared=n_shared, n_rna_only=n_rna_only, n_atac_only=n_atac_only, **fit_kwargs)
    reissue(caught, skip_link_coverage=built, stacklevel=3)

    write_results(rna_ad, atac_ad, res, key, gene_idx, fit_kwargs, obsm_key=obsm_key, varm_key=varm_key)
    return res


def write_results(rna_ad, atac_ad, res: JMTResult, key: str, gene_idx=None, params=None, *,
                  obsm_key: Optional[str] = None, varm_key: Optional[str] = None) -> None:
    """Write a fit into the RNA and ATAC AnnData objects (the keys of the module docstring).

    ``obsm_key`` / ``varm_key`` name the memberships in ``.obsm`` / ``.varm``
    (default ``X_<key>`` and ``<key>_C``); the program activities go to
    ``.obsm[obsm_key + "_programs"]``. ``gene_idx``: the genes fitted (others
    get NaN rows in ``.varm``). ``.uns[key]`` also holds what mapping new cells
    needs (``b_genes`` / ``b_regions``, ``model``).
    """
    import pandas as pd

    obsm_key = f"X_{key}" if obsm_key is None else obsm_key
    varm_key = f"{key}_C" if varm_key is None else varm_key
    params = params or {}
    names = [f"{key}_{k}" for k in range(res.n_clusters)]
    columns = [f"{key}_column_{k}" for k in range(res.K)]
    uns = {
        "S_rna": res.S_rna, "S_atac": res.S_atac, "loss_history": res.loss_history,
        "loss_terms": list(res.loss_terms), "n_iter": res.n_iter, "n_undone": res.n_undone,
        "converged": res.converged, "stop_reason": res.stop_reason, "seed": res.seed,
        "n_shared": res.n_shared, "n_rna_only": res.n_rna_only, "n_atac_only": res.n_atac_only,
        "cluster_names": names, "link_coverage": dict(res.link_coverage or {}),
        "column_clusters": (np.arange(res.K) if res.column_clusters is None else res.column_clusters),
        "resolution": -1.0 if res.resolution is None else float(res.resolution),
        "params": {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))},
        "b_genes": res.b_genes, "b_regions": res.b_regions,
        # by name, so that a reference cut to these genes still maps new cells
        "genes_fitted": np.asarray(rna_ad.var_names if gene_idx is None else rna_ad.var_names[gene_idx]).astype(str),
        "model": {k: v for k, v in (res.model or {}).items() if v is not None},
    }
    for ad, C, P, empty, labels, cols, Cf, idx in (
            (rna_ad, res.C_rna, res.programs_rna, res.empty_rna, res.labels_rna, res.columns_rna, res.C_genes,
             gene_idx),
            (atac_ad, res.C_atac, res.programs_atac, res.empty_atac, res.labels_atac, res.columns_atac,
             res.C_regions, None)):
        ad.obsm[obsm_key] = C
        ad.obsm[f"{obsm_key}_programs"] = P
        cluster = np.asarray(names, dtype=object)[labels]
        cluster[empty] = None  # no data, no cluster
        ad.obs[f"{key}_cluster"] = pd.Categorical(cluster, categories=names)
        column = np.asarray(columns, dtype=object)[cols]
        column[empty] = None
        ad.obs[f"{key}_column"] = pd.Categorical(column, categories=columns)
        ad.obs[f"{key}_empty"] = np.asarray(empty, dtype=bool)
        full = np.full((ad.n_vars, res.K), np.nan, dtype=Cf.dtype)
        full[idx if idx is not None else slice(None)] = Cf
        ad.varm[varm_key] = full
        ad.uns[key] = dict(uns)


def result_from_anndata(rna_ad, atac_ad, key: str, obsm_key: Optional[str] = None,
                        varm_key: Optional[str] = None) -> JMTResult:
    """The fit :func:`write_results` wrote under ``key``, as a :class:`JMTResult` (for mapping new cells).

    Raises
    ------
    KeyError
        Nothing was written under ``key``, or it was written before new cells could be mapped (no ``model``).
    """
    obsm_key = f"X_{key}" if obsm_key is None else obsm_key
    varm_key = f"{key}_C" if varm_key is None else varm_key
    if key not in rna_ad.uns or "model" not in rna_ad.uns[key] or not len(rna_ad.uns[key]["model"]):
        raise KeyError(f"no fastjmt fit under .uns[{key!r}] that new cells can be mapped onto: fit with "
                       f"fastjmt.tl.jmt(..., key_added={key!r}) first")
    u = rna_ad.uns[key]
    genes = rna_ad.var_names.get_indexer(np.asarray(u["genes_fitted"]).astype(str))
    if (genes < 0).any():
        raise KeyError(f"the reference RNA AnnData lacks {int((genes < 0).sum())} of the {genes.size} genes the fit "
                       f"under {key!r} used; keep them (var_names) to map new cells")
    cc = np.asarray(u["column_clusters"])
    return JMTResult(
        C_rna=np.asarray(rna_ad.obsm[obsm_key]), C_atac=np.asarray(atac_ad.obsm[obsm_key]),
        C_genes=np.asarray(rna_ad.varm[varm_key])[genes], C_regions=np.asarray(atac_ad.varm[varm_key]),
        S_rna=np.asarray(u["S_rna"]), S_atac=np.asarray(u["S_atac"]), b_rna=np.zeros(rna_ad.n_obs),
        b_atac=np.zeros(atac_ad.n_obs), b_genes=np.asarray(u["b_genes"]), b_regions=np.asarray(u["b_regions"]),
        loss_history=np.asarray(u["loss_history"]), n_iter=int(u["n_iter"]), converged=bool(u["converged"]),
        seed=int(u["seed"]), n_shared=int(u["n_shared"]), n_rna_only=int(u["n_rna_only"]),
        n_atac_only=int(u["n_atac_only"]), fit_seconds=0.0, restart_losses=np.zeros(1),
        programs_rna=np.asarray(rna_ad.obsm[f"{obsm_key}_programs"]),
        programs_atac=np.asarray(atac_ad.obsm[f"{obsm_key}_programs"]),
        column_clusters=None if float(u["resolution"]) < 0 else cc,
        empty_rna=np.asarray(rna_ad.obs[f"{key}_empty"], dtype=bool),
        empty_atac=np.asarray(atac_ad.obs[f"{key}_empty"], dtype=bool),
        model=dict(u["model"]),
    )


def fit_mosaic_anndata(
    rna=None,
    atac=None,
    *,
    batch_key: str,
    n_shared: int,
    private: Optional[dict] = None,
    gene_activity=None,
    genes=None,
    promoter: int = 2000,
    max_distance: int = 0,
    decay: float = 5000.0,
    rna_layer: Optional[str] = None,
    atac_layer: Optional[str] = None,
    gene_key: str = "auto",
    key: str = "jmt",
    obsm_key: Optional[str] = None,
    varm_key: Optional[str] = None,
    mod_rna: str = "rna",
    mod_atac: str = "atac",
    **fit_kwargs,
):
    """:func:`fastjmt.fit_mosaic` on AnnData objects with a batch column, results written into them.

    Parameters
    ----------
    rna : AnnData or MuData
        Every cell with RNA (counts in ``.X`` or ``rna_layer``), ``.obs[batch_key]`` naming its batch; or a
        MuData with modalities ``mod_rna`` and ``mod_atac`` (then ``atac`` is None; the batch column may be in
        each modality's ``.obs`` or in the MuData's).
    atac : AnnData, optional
        Every cell with ATAC, ``.obs[batch_key]`` naming its batch. A batch found in both is paired: its
        cells must carry the same ``obs_names`` in both (any order; muon's convention for multiome).
    batch_key : str
        The ``.obs`` column of the batches.
    n_shared, private
        As in :func:`fastjmt.fit_mosaic` (batch names are the column's values as strings; ``private``'s keys are
        read as strings too, so ``{2: 1}`` names batch ``"2"``).
    gene_activity, genes, promoter, max_distance, decay, rna_layer, atac_layer, gene_key, mod_rna, mod_atac
        As in :func:`fit_anndata`.
    key : str
        Prefix of the written keys: ``.obsm["X_<key>"]`` (memberships), ``.obsm["X_<key>_programs"]``,
        ``.obs["<key>_cluster"]`` (the recommended clusters, the same names in every batch and modality),
        ``.obs["<key>_column"]``, ``.obs["<key>_empty"]``, ``.varm["<key>_C"]``, ``.uns["<key>"]`` (layout, S per
        block, loss history, convergence, the column merge).
    obsm_key, varm_key : str, optional
        Names of the memberships in ``.obsm`` / ``.varm`` (default ``X_<key>`` and ``<key>_C``;
        ``fastjmt.tl.jmt_mosaic`` passes ``key`` itself); the program activities go to ``obsm_key + "_programs"``.
    **fit_kwargs
        Options of :func:`fastjmt.fit_mosaic`.

    Returns
    -------
    MosaicResult

    Raises
    ------
    KeyError
        ``batch_key`` missing from an ``.obs``.
    ValueError
        A cell without a batch; a paired batch whose cells differ between the modalities or whose
        ``obs_names`` repeat; the errors of :func:`fastjmt.fit_mosaic`.

    Warns
    -----
    UserWarning
        When an RNA-only and an ATAC-only batch share most of their cell names (a pairing misspelt as two
        batch names).
    """
    import pandas as pd

    from .mosaic import fit_mosaic

    _require_anndata()
    rna_ad, atac_ad, mdata = _split(rna, atac, mod_rna, mod_atac)

    def batch_of(ad, name):
        if batch_key in ad.obs:
            values = ad.obs[batch_key]
        elif mdata is not None and batch_key in mdata.obs:  # muon keeps shared columns in the MuData's .obs
            if not mdata.obs_names.is_unique:
                dup = mdata.obs_names[mdata.obs_names.duplicated()]
                raise ValueError(f"the MuData's obs_names repeat ({list(dup[:3])}), so its .obs[{batch_key!r}] "
                                 "cannot be matched to the cells; make them unique (obs_names_make_unique)")
            values = mdata.obs[batch_key].reindex(ad.obs_names)
        else:
            raise KeyError(f"{name}.obs has no column {batch_key!r} (batch_key); its columns are {list(ad.obs)}")
        missing = pd.isna(np.asarray(values, dtype=object))
        if missing.any():
            raise ValueError(f"{name}.obs[{batch_key!r}] is missing for {int(missing.sum())} cells (e.g. "
                             f"{list(ad.obs_names[missing][:3])}): give every cell a batch")
        return np.asarray(values).astype(str)

    rb, ab = batch_of(rna_ad, "rna"), batch_of(atac_ad, "atac")
    G = read_matrix(rna_ad, rna_layer)
    R = read_matrix(atac_ad, atac_layer)
    A = sp.csr_matrix(_gene_activity(rna_ad, atac_ad, gene_activity, genes, promoter, max_distance, decay,
                                     gene_key))
    rows, batches = {}, {}
    for k in dict.fromkeys(str(x) for x in np.r_[rb, ab]):
        r_idx, a_idx = np.flatnonzero(rb == k), np.flatnonzero(ab == k)
        if r_idx.size and a_idx.size:  # paired: the ATAC rows in the RNA rows' order
            pos = pd.Index(np.asarray(atac_ad.obs_names[a_idx]))
            names = pd.Index(np.asarray(rna_ad.obs_names[r_idx]))
            for idx, name in ((names, "rna"), (pos, "atac")):
                if not idx.is_unique:
                    raise ValueError(f"batch {k!r}: {name}.obs_names repeat ({list(idx[idx.duplicated()][:3])}), so "
                                     "its paired cells cannot be matched; make them unique (obs_names_make_unique)")
            where = pos.get_indexer(names)
            if len(pos) != len(names) or where.min() < 0:
                only_rna = names.difference(pos)
                only_atac = pos.difference(names)
                raise ValueError(
                    f"batch {k!r} is in both rna ({len(names)} cells) and atac ({len(pos)} cells) but its cells differ "
                    f"({len(only_rna)} only in rna, e.g. {list(only_rna[:2])}; {len(only_atac)} only in atac, e.g. "
                    f"{list(only_atac[:2])}): a paired batch holds the same cells (the same obs_names) in both "
                    "modalities; if these cells are not paired, give the two a different batch name")
            a_idx = a_idx[where]
        rows[k] = (r_idx, a_idx)
    for k, (r_idx, a_idx) in rows.items():  # the same cells under two batch names: probably a misspelt pairing
        if r_idx.size and not a_idx.size:
            names = pd.Index(np.asarray(rna_ad.obs_names[r_idx]))
            for k2, (r2, a2) in rows.items():
                if a2.size and not r2.size:
                    shared = names.intersection(pd.Index(np.asarray(atac_ad.obs_names[a2])))
                    if len(shared) > 0.5 * min(len(names), a2.size):
                        warnings.warn(f"batch {k!r} (rna) and batch {k2!r} (atac) share {len(shared)} cell names: "
                                      "if they are the same cells, give them the same batch name so that they are "
                                      "fitted as paired", UserWarning, stacklevel=2)
        batches[k] = {m: X[idx] for m, X, idx in (("rna", G, r_idx), ("atac", R, a_idx)) if idx.size}
    if isinstance(private, dict):  # batch names come from the column as strings: so may private's keys
        private = {str(k): v for k, v in private.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_mosaic(batches, A, n_shared=n_shared, private=private, **fit_kwargs)
    reissue(caught, skip_link_coverage=gene_activity is None or isinstance(gene_activity, genome.GeneActivity),
            stacklevel=3)

    obsm_key = f"X_{key}" if obsm_key is None else obsm_key
    varm_key = f"{key}_C" if varm_key is None else varm_key
    labels, columns = res.labels, res.columns
    n_cl = int(max(lab.max() for lab in labels.values())) + 1
    names = [f"{key}_{i}" for i in range(n_cl)]
    col_names = [f"{key}_column_{i}" for i in range(res.K)]
    uns = {"n_shared": res.n_shared, "private": dict(res.private), "batches": list(res.batches),
           "batch_key": batch_key, "loss_history": res.loss_history, "n_iter": res.n_iter,
           "converged": res.converged, "stop_reason": res.stop_reason, "seed": res.seed,
           "cluster_names": names, "S": {k: dict(v) for k, v in res.S.items()},
           "column_clusters": np.arange(res.K) if res.column_clusters is None else res.column_clusters,
           "resolution": -1.0 if res.resolution is None else float(res.resolution)}
    for ad, m, Cf, which in ((rna_ad, "rna", res.C_genes, 0), (atac_ad, "atac", res.C_regions, 1)):
        C = np.zeros((ad.n_obs, res.K), dtype=Cf.dtype)
        P = np.zeros((ad.n_obs, res.K), dtype=Cf.dtype)
        cluster = np.full(ad.n_obs, None, dtype=object)
        column = np.full(ad.n_obs, None, dtype=object)
        for k in res.batches:
            idx = rows[k][which]
            if not idx.size:
                continue
            C[idx] = res.memberships[k]
            P[idx] = res.programs[k][m]
            ok = labels[k] >= 0
            cluster[idx[ok]] = np.asarray(names, dtype=object)[labels[k][ok]]
            column[idx[ok]] = np.asarray(col_names, dtype=object)[columns[k][ok]]
        ad.obsm[obsm_key] = C
        ad.obsm[f"{obsm_key}_programs"] = P
        ad.obs[f"{key}_cluster"] = pd.Categorical(cluster, categories=names)
        ad.obs[f"{key}_column"] = pd.Categorical(column, categories=col_names)
        empty = np.zeros(ad.n_obs, dtype=bool)
        for k in res.batches:
            if rows[k][which].size:
                empty[rows[k][which]] = res.empty[k]
        ad.obs[f"{key}_empty"] = empty
        ad.varm[varm_key] = Cf
        ad.uns[key] = dict(uns)
    return res

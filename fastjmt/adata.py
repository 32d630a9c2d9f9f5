"""AnnData / MuData in and out (needs the ``anndata`` extra: ``pip install "fastjmt[anndata]"``).

:func:`fit_anndata` takes an RNA and an ATAC AnnData (or a MuData holding
both), aligns features by name, builds the gene activity matrix from
coordinates if asked, fits, and writes the results where scanpy users look:

============================  ==================================================
``.obsm["X_<key>"]``          cell memberships C (cells × K): the joint embedding
``.obs["<key>_cluster"]``     hard clusters (argmax of C), categorical
``.varm["<key>_C"]``          feature memberships (features × K; NaN rows for
                              features left out of the fit)
``.uns["<key>"]``             S, loss history, n_iter, n_undone, converged, seed, layout
                              and the fit's options (in both AnnData objects)
============================  ==================================================

With a MuData, the results are written into its two modality AnnData objects.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import scipy.sparse as sp

from . import genome
from . import preprocess as pp
from .api import JMTResult, fit


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


def _gene_activity(rna, atac, gene_activity, genes, promoter, max_distance, decay):
    gnames, rnames = np.asarray(rna.var_names).astype(str), np.asarray(atac.var_names).astype(str)
    if gene_activity is not None:
        if isinstance(gene_activity, genome.GeneActivity):
            return gene_activity.aligned(gnames, rnames)
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
        path = os.fspath(genes)
        base = path[:-3] if path.endswith(".gz") else path
        genes = genome.read_bed(path) if base.endswith((".bed", ".tsv", ".txt")) else genome.read_gtf(path)
    regions = genome.parse_regions(rnames)
    ga = genome.gene_activity(genes, regions, promoter=promoter, max_distance=max_distance, decay=decay)
    return ga.aligned(gnames, rnames)


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
    key: str = "jmt",
    mod_rna: str = "rna",
    mod_atac: str = "atac",
    **fit_kwargs,
) -> JMTResult:
    """Fit scJMT on AnnData objects and write the results into them.

    Parameters
    ----------
    rna : AnnData or MuData
        RNA cells × genes (counts in ``.X`` or ``rna_layer``); or a MuData with
        modalities ``mod_rna`` and ``mod_atac`` (then ``atac`` is None).
    atac : AnnData, optional
        ATAC cells × regions; region names like ``chr1:100-200`` when the gene
        activity is built from coordinates.
    n_shared, n_rna_only, n_atac_only : int
        The cluster layout (see :func:`fastjmt.fit`).
    gene_activity : sparse matrix or fastjmt.genome.GeneActivity, optional
        Genes × regions links; a ``GeneActivity`` is aligned to the var names.
    genes : path or fastjmt.genome.Intervals, optional
        Gene coordinates (GTF/GFF, or a BED-like ``.bed``/``.tsv``/``.txt``) to
        build the gene activity by gene body + ``promoter`` overlap (and
        ``max_distance``/``decay``, see :func:`fastjmt.genome.gene_activity`).
    rna_layer, atac_layer : str, optional
        Layers to read instead of ``.X``.
    n_top_genes : int, optional
        Fit on the most variable genes only (others get NaN rows in ``.varm``).
    key : str
        Prefix of the written keys.
    **fit_kwargs
        Passed to :func:`fastjmt.fit` (weights, ``max_iter``, ``random_state``…).

    Returns
    -------
    JMTResult
        Also written into the AnnData objects (see the module docstring).
    """
    _require_anndata()
    import pandas as pd

    rna_ad, atac_ad, _ = _split(rna, atac, mod_rna, mod_atac)
    G = read_matrix(rna_ad, rna_layer)
    R = read_matrix(atac_ad, atac_layer)
    A = sp.csr_matrix(_gene_activity(rna_ad, atac_ad, gene_activity, genes, promoter, max_distance, decay))
    gene_idx = np.arange(rna_ad.n_vars)
    if n_top_genes is not None and n_top_genes < rna_ad.n_vars:
        gene_idx = pp.select_variable_genes(G, n_top_genes)
        G, A = G[:, gene_idx], A[gene_idx]
    res = fit(G, R, A, n_shared=n_shared, n_rna_only=n_rna_only, n_atac_only=n_atac_only, **fit_kwargs)

    names = [f"{key}_{k}" for k in range(res.K)]
    uns = {
        "S_rna": res.S_rna, "S_atac": res.S_atac, "loss_history": res.loss_history,
        "loss_terms": list(res.loss_terms), "n_iter": res.n_iter, "n_undone": res.n_undone,
        "converged": res.converged, "seed": res.seed,
        "n_shared": res.n_shared, "n_rna_only": res.n_rna_only, "n_atac_only": res.n_atac_only,
        "cluster_names": names,
        "params": {k: v for k, v in fit_kwargs.items() if isinstance(v, (int, float, str, bool))},
    }
    for ad, C, labels, Cf, idx in ((rna_ad, res.C_rna, res.labels_rna, res.C_genes, gene_idx),
                                   (atac_ad, res.C_atac, res.labels_atac, res.C_regions, None)):
        ad.obsm[f"X_{key}"] = C
        ad.obs[f"{key}_cluster"] = pd.Categorical(np.asarray(names)[labels], categories=names)
        full = np.full((ad.n_vars, res.K), np.nan, dtype=Cf.dtype)
        full[idx if idx is not None else slice(None)] = Cf
        ad.varm[f"{key}_C"] = full
        ad.uns[key] = dict(uns)
    return res

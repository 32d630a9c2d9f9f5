"""scanpy-style tools: ``fastjmt.tl.jmt`` fits and writes into the AnnData objects, ``jmt_transform`` maps new cells,
``jmt_mosaic`` fits batches of paired and unpaired cells (:func:`fastjmt.fit_mosaic`).

As scanpy's ``tl`` functions: results under a key the caller chooses
(``key_added``), in place by default, or on copies that are returned
(``copy=True``). For a fit under ``key_added="jmt"``:

==============================  ================================================
``.obsm["jmt"]``                cell memberships C (cells × K)
``.obsm["jmt_programs"]``       program activities (cells × K, continuous): the
                                representation for ``sc.pp.neighbors(adata,
                                use_rep="jmt_programs")`` and UMAP
``.obs["jmt_cluster"]``         the recommended clusters (categorical, the same
                                names in both modalities)
``.obs["jmt_column"]``          the argmax column; ``.obs["jmt_empty"]``: cells
                                without counts
``.varm["jmt"]``                feature memberships (features × K)
``.uns["jmt"]``                 S, loss history, layout, link coverage, the
                                parameters and what mapping new cells needs
==============================  ================================================

Needs the ``anndata`` extra (``pip install "fastjmt[anndata]"``).
"""

from __future__ import annotations

import warnings

import numpy as np

from .adata import _split, fit_anndata, fit_mosaic_anndata, reissue, result_from_anndata


def _pair(data, mod_rna, mod_atac):
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise TypeError("pass a MuData or a pair (rna_adata, atac_adata)")
        return data[0], data[1], None
    return _split(data, None, mod_rna, mod_atac)


def jmt(data, *, n_shared: int, n_rna_only: int = 0, n_atac_only: int = 0, key_added: str = "jmt",
        copy: bool = False, mod_rna: str = "rna", mod_atac: str = "atac", **kwargs):
    """Fit scJMT on a MuData (modalities ``mod_rna``, ``mod_atac``) or a pair ``(rna, atac)`` of AnnData.

    Parameters
    ----------
    data : MuData or tuple of AnnData
        RNA cells × genes and ATAC cells × regions (raw counts in ``.X`` or a layer).
    n_shared, n_rna_only, n_atac_only : int
        The cluster layout (see :func:`fastjmt.fit`).
    key_added : str
        Key of every result (see the module docstring).
    copy : bool
        Work on copies and return them; otherwise write in place and return None.
    **kwargs
        Passed to :func:`fastjmt.adata.fit_anndata` (``gene_activity``, ``genes``, layers, ``n_top_genes``)
        and on to :func:`fastjmt.fit` (weights, ``max_iter``, ``random_state``, …).

    Returns
    -------
    None, or the copies (the MuData, or the ``(rna, atac)`` pair) when ``copy``.

    Raises
    ------
    The errors of :func:`fastjmt.fit` and :func:`fastjmt.adata.fit_anndata`, before anything is written.
    """
    if copy:
        data = data.copy() if not isinstance(data, (tuple, list)) else type(data)(ad.copy() for ad in data)
    rna_ad, atac_ad, _ = _pair(data, mod_rna, mod_atac)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_anndata(rna_ad, atac_ad, n_shared=n_shared, n_rna_only=n_rna_only, n_atac_only=n_atac_only,
                    key=key_added, obsm_key=key_added, varm_key=key_added, **kwargs)
    reissue(caught)
    return data if copy else None


def jmt_mosaic(data, *, batch_key: str, n_shared: int, private: dict | None = None, key_added: str = "jmt",
               copy: bool = False, mod_rna: str = "rna", mod_atac: str = "atac", **kwargs):
    """Fit a mosaic (:func:`fastjmt.fit_mosaic`) on a MuData or a pair ``(rna, atac)`` of AnnData with a batch column.

    Parameters
    ----------
    data : MuData or tuple of AnnData
        Every cell with RNA and every cell with ATAC; ``.obs[batch_key]`` (of each modality, or of the MuData)
        names each cell's batch; a batch in both modalities is paired (the same ``obs_names``).
    batch_key : str
        The batch column.
    n_shared, private
        As in :func:`fastjmt.fit_mosaic`.
    key_added : str
        Key of every result, as for :func:`jmt` (``.obsm[key_added]``, ``.obsm[key_added + "_programs"]``,
        ``.obs[key_added + "_cluster"]``, ``.varm[key_added]``, ``.uns[key_added]``).
    copy : bool
        Work on copies and return them; otherwise write in place and return None.
    **kwargs
        Passed to :func:`fastjmt.adata.fit_mosaic_anndata` (``gene_activity``, ``genes``, layers) and on to
        :func:`fastjmt.fit_mosaic`.

    Returns
    -------
    None, or the copies when ``copy``.

    Raises
    ------
    The errors of :func:`fastjmt.adata.fit_mosaic_anndata`, before anything is written.
    """
    if copy:
        data = data.copy() if not isinstance(data, (tuple, list)) else type(data)(ad.copy() for ad in data)
    if isinstance(data, (tuple, list)):
        rna_ad, atac_ad, _ = _pair(data, mod_rna, mod_atac)
        args = (rna_ad, atac_ad)
    else:
        args = (data, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_mosaic_anndata(*args, batch_key=batch_key, n_shared=n_shared, private=private, key=key_added,
                           obsm_key=key_added, varm_key=key_added, mod_rna=mod_rna, mod_atac=mod_atac, **kwargs)
    reissue(caught)
    return data if copy else None


def jmt_transform(new, reference, *, key: str = "jmt", key_added: str | None = None, copy: bool = False,
                  mod_rna: str = "rna", mod_atac: str = "atac", rna_layer=None, atac_layer=None,
                  max_iter: int = 100):
    """Map new cells onto the fit stored under ``key`` in ``reference`` (by :func:`jmt`), without refitting it.

    Parameters
    ----------
    new : AnnData, MuData or tuple
        New cells: an RNA AnnData (its ``var_names`` must include the reference's genes), a MuData with
        either modality, or a pair ``(rna, atac)`` (either may be None).
    reference : MuData or tuple of AnnData
        The data :func:`jmt` wrote into.
    key : str
        The reference fit's ``key_added``.
    key_added : str, optional
        Key of the new cells' results (default: ``key``): ``.obsm[key_added]``,
        ``.obsm[key_added + "_programs"]``, ``.obs[key_added + "_cluster"]`` (the reference's cluster names;
        missing for cells without counts), ``.obs[key_added + "_column"]``, ``.obs[key_added + "_empty"]``.
    copy : bool
        Work on copies and return them; otherwise write in place and return None.

    Raises
    ------
    KeyError
        No fit under ``key`` in ``reference``, or a reference feature missing from the new cells.
    """
    import pandas as pd

    from .adata import read_matrix
    from .transform import map_cells

    key_added = key if key_added is None else key_added
    ref_rna, ref_atac, _ = _pair(reference, mod_rna, mod_atac)
    result = result_from_anndata(ref_rna, ref_atac, key, obsm_key=key, varm_key=key)
    if copy:
        new = new.copy() if not isinstance(new, (tuple, list)) else type(new)(
            None if ad is None else ad.copy() for ad in new)
    if isinstance(new, (tuple, list)):
        new_rna, new_atac = new
    elif hasattr(new, "mod"):
        new_rna, new_atac = new.mod.get(mod_rna), new.mod.get(mod_atac)
    else:
        new_rna, new_atac = new, None
    genes = pd.Index(np.asarray(ref_rna.uns[key]["genes_fitted"]).astype(str))
    matrices = {}
    for name, ad, features, layer in (("rna", new_rna, genes, rna_layer),
                                      ("atac", new_atac, ref_atac.var_names, atac_layer)):
        if ad is None:
            continue
        missing = features.difference(ad.var_names)
        if len(missing):
            raise KeyError(f"the new {name} cells lack {len(missing)} of the reference's features, e.g. "
                           f"{', '.join(map(str, missing[:3]))}; pass them over the reference's features")
        matrices[name] = read_matrix(ad, layer)[:, ad.var_names.get_indexer(features)]
    mapped = map_cells(result, max_iter=max_iter, **matrices)
    names = list(ref_rna.uns[key]["cluster_names"])
    for name, ad in (("rna", new_rna), ("atac", new_atac)):
        if name not in mapped:
            continue
        m = mapped[name]
        ad.obsm[key_added] = m["C"]
        ad.obsm[f"{key_added}_programs"] = m["programs"]
        ad.obs[f"{key_added}_cluster"] = pd.Categorical([None if k < 0 else names[k] for k in m["labels"]],
                                                        categories=names)  # cells without counts: no call
        columns = [f"{key}_column_{k}" for k in range(result.K)]
        ad.obs[f"{key_added}_column"] = pd.Categorical([None if k < 0 else columns[k] for k in m["columns"]],
                                                       categories=columns)
        ad.obs[f"{key_added}_empty"] = m["empty"]
    return new if copy else None

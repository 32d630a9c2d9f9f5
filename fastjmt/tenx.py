"""Read what Cell Ranger, Cell Ranger ATAC and Cell Ranger ARC write (needs the ``tenx`` extra: scanpy).

The matrices are read with scanpy's 10x readers (:func:`scanpy.read_10x_h5`,
:func:`scanpy.read_10x_mtx`) and anndata's :func:`anndata.io.read_mtx`; this
module only finds the files and splits the features by type:

- ``filtered_feature_bc_matrix.h5`` (Cell Ranger): RNA, the ``Gene Expression`` features;
- ``filtered_feature_bc_matrix/`` (``matrix.mtx.gz``, ``features.tsv.gz``,
  ``barcodes.tsv.gz``; Cell Ranger 2 ``genes.tsv``): RNA;
- ``filtered_peak_bc_matrix.h5`` (Cell Ranger ATAC): ATAC, the ``Peaks`` features;
- ``filtered_peak_bc_matrix/`` (``matrix.mtx``, ``peaks.bed``, ``barcodes.tsv``,
  optionally gzipped): ATAC, regions named ``chrom:start-end``;
- Cell Ranger ARC ``filtered_feature_bc_matrix.h5`` or its folder: RNA and ATAC,
  split by feature type (``Gene Expression``, ``Peaks``);
- a Cell Ranger ``outs/`` folder: whichever of the above it holds.

RNA features are named by their gene ids (``var_names``; unique, unlike
symbols) with the symbols in ``.var["gene_symbols"]``; :func:`fastjmt.genome`
matches either against a GTF (``gene_key="auto"``). The cells of a multiome
run appear in both modalities; fastjmt fits them as unpaired (the pairing
is not used).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = ["read_10x"]

RNA_TYPE = "Gene Expression"
ATAC_TYPE = "Peaks"


def _require_scanpy():
    try:
        import scanpy  # noqa: F401
    except ImportError as exc:
        raise ImportError('reading 10x Genomics output needs scanpy: pip install "fastjmt[tenx]"') from exc
    import scanpy

    return scanpy


def _first(folder: str, names) -> Optional[str]:
    for n in names:
        p = os.path.join(folder, n)
        if os.path.exists(p):
            return p
    return None


def _split(ad, path: str) -> dict:
    """{"rna": AnnData or None, "atac": AnnData or None} by ``.var["feature_types"]``."""
    types = np.asarray(ad.var["feature_types"]).astype(str) if "feature_types" in ad.var else \
        np.full(ad.n_vars, RNA_TYPE)
    out = {}
    for key, t in (("rna", RNA_TYPE), ("atac", ATAC_TYPE)):
        sel = types == t
        out[key] = ad[:, sel].copy() if sel.any() else None
    if out["rna"] is None and out["atac"] is None:
        raise ValueError(f"{path}: no '{RNA_TYPE}' or '{ATAC_TYPE}' features (feature types here: "
                         f"{sorted(set(types.tolist()))})")
    if out["rna"] is not None:
        rna = out["rna"]
        if "gene_ids" in rna.var:  # ids as names: unique, and matched to a GTF with the version stripped
            rna.var["gene_symbols"] = np.asarray(rna.var_names).astype(str)
            rna.var_names = np.asarray(rna.var["gene_ids"]).astype(str)
    return out


def _read_peak_folder(folder: str, matrix: str):
    """A Cell Ranger ATAC ``filtered_peak_bc_matrix/`` folder: peaks × cells Matrix Market, peaks.bed, barcodes."""
    from anndata.io import read_mtx

    from .genome import _open_text, read_regions

    peaks = _first(folder, ("peaks.bed.gz", "peaks.bed"))
    barcodes = _first(folder, ("barcodes.tsv.gz", "barcodes.tsv"))
    if peaks is None or barcodes is None:
        raise ValueError(f"{folder}: a 10x matrix folder needs features.tsv(.gz) (Cell Ranger) or peaks.bed(.gz) "
                         "and barcodes.tsv(.gz) (Cell Ranger ATAC) next to matrix.mtx")
    ad = read_mtx(matrix).T  # 10x writes features × cells
    regions = read_regions(peaks)
    with _open_text(barcodes) as fh:
        cells = [ln.strip().split("\t")[0] for ln in fh if ln.strip()]
    if len(regions) != ad.n_vars or len(cells) != ad.n_obs:
        raise ValueError(f"{folder}: matrix.mtx is {ad.n_vars} features × {ad.n_obs} cells but peaks.bed has "
                         f"{len(regions)} peaks and barcodes.tsv {len(cells)} barcodes")
    ad.var_names = [f"{c}:{s}-{e}" for c, s, e in zip(regions.chrom, regions.start, regions.end)]
    ad.obs_names = cells
    return {"rna": None, "atac": ad}


def read_10x(path) -> dict:
    """Read Cell Ranger / Cell Ranger ATAC / Cell Ranger ARC output into AnnData objects.

    Parameters
    ----------
    path : str or path-like
        A ``.h5`` feature-barcode matrix, a matrix folder (``matrix.mtx[.gz]``
        with ``features.tsv[.gz]``/``genes.tsv`` or ``peaks.bed[.gz]``, and
        ``barcodes.tsv[.gz]``), or an ``outs/`` folder holding
        ``filtered_feature_bc_matrix.h5``, ``filtered_peak_bc_matrix.h5`` or
        those folders (the ``.h5`` is preferred).

    Returns
    -------
    dict
        ``{"rna": AnnData or None, "atac": AnnData or None}``: cells × features,
        counts as float32 CSR in ``.X``. RNA ``var_names`` are gene ids (symbols
        in ``.var["gene_symbols"]``), ATAC ``var_names`` ``chrom:start-end``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or a folder holds no 10x matrix.
    ValueError
        When the files do not fit together or hold neither gene expression nor peaks.
    ImportError
        Without scanpy (``pip install "fastjmt[tenx]"``).
    """
    sc = _require_scanpy()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        inner = _first(path, ("filtered_feature_bc_matrix.h5", "filtered_peak_bc_matrix.h5",
                              "filtered_feature_bc_matrix", "filtered_peak_bc_matrix"))
        if inner is not None:
            return read_10x(inner)
        matrix = _first(path, ("matrix.mtx.gz", "matrix.mtx"))
        if matrix is None:
            raise FileNotFoundError(f"{path}: no 10x matrix here (expected matrix.mtx(.gz) with features.tsv(.gz) and "
                                    "barcodes.tsv(.gz), a filtered_feature_bc_matrix(.h5) or a "
                                    "filtered_peak_bc_matrix(.h5))")
        if _first(path, ("features.tsv.gz", "features.tsv", "genes.tsv")) is None:
            return _read_peak_folder(path, matrix)
        ad = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=False, gex_only=False)
        return _split(ad, path)
    if path.endswith(".h5"):
        try:
            ad = sc.read_10x_h5(path, gex_only=False)
        except Exception as exc:  # scanpy raises a bare Exception for a missing dataset
            raise ValueError(f"{path}: not a 10x Genomics feature-barcode matrix .h5 ({exc})") from None
        return _split(ad, path)
    raise ValueError(f"{path}: not a 10x Genomics output (a .h5 file or a matrix folder)")

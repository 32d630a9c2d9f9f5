"""Gene activity from genomic coordinates: which ATAC regions regulate which gene.

Genes come from a GTF/GFF file or a BED-like table (chrom, start, end, strand,
name); regions from names such as ``chr1:100-200``, ``chr1_100_200`` or
``chr1-100-200`` (or a table). A region is linked to a gene when it overlaps
the gene body extended upstream by ``promoter`` bases (the gene body +
promoter rule of Signac's ``GeneActivity`` and ArchR's gene score), and,
optionally, when it lies within ``max_distance`` of that window, with weight
``exp(−distance / decay)`` (a distance decay as in ArchR and scGLUE).

All coordinates are handled as 0-based, half-open intervals (GTF/GFF's 1-based
closed starts are shifted on reading). The search sorts regions per
chromosome once and finds each gene's candidates with binary search: time
O((genes + regions) log regions + links), never a loop over all pairs.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

_REGION_RE = re.compile(r"^(?P<chrom>.+?)[:_-](?P<start>\d+)[-_](?P<end>\d+)$")


@dataclass
class Intervals:
    """Named genomic intervals (0-based, half-open). ``strand`` is ``"+"``, ``"-"`` or ``"."``."""

    chrom: np.ndarray
    start: np.ndarray
    end: np.ndarray
    strand: np.ndarray
    name: np.ndarray

    def __len__(self):
        return self.name.shape[0]


@dataclass
class GeneActivity:
    """A genes × regions link matrix with the names of its rows and columns."""

    matrix: sp.csr_matrix
    genes: np.ndarray
    regions: np.ndarray

    def aligned(self, genes, regions) -> sp.csr_matrix:
        """The matrix re-indexed to the given gene and region names (missing names give empty rows/columns)."""
        gi = _positions(self.genes, genes)
        ri = _positions(self.regions, regions)
        M = self.matrix.tocoo()
        keep_g = gi[M.row] >= 0
        keep_r = ri[M.col] >= 0
        keep = keep_g & keep_r
        out = sp.csr_matrix((M.data[keep], (gi[M.row[keep]], ri[M.col[keep]])), shape=(len(genes), len(regions)))
        out.sum_duplicates()
        return out


def _positions(source_names, target_names) -> np.ndarray:
    """For each entry of ``source_names``, its index in ``target_names`` or −1."""
    index = {n: i for i, n in enumerate(np.asarray(target_names).astype(str))}
    return np.array([index.get(n, -1) for n in np.asarray(source_names).astype(str)], dtype=np.int64)


def _open_text(path):
    path = os.fspath(path)
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


_ATTR_GTF = re.compile(r'(\S+)\s+"([^"]*)"')


def _gtf_name(attrs: str, gff: bool) -> str | None:
    if gff:
        fields = dict(kv.split("=", 1) for kv in attrs.strip().strip(";").split(";") if "=" in kv)
        for key in ("gene_name", "Name", "gene_id", "ID"):
            if key in fields:
                return fields[key]
        return None
    fields = dict(_ATTR_GTF.findall(attrs))
    return fields.get("gene_name") or fields.get("gene_id")


def read_gtf(path, feature: str = "gene") -> Intervals:
    """Genes from a GTF or GFF3 file (optionally gzipped).

    Rows whose feature column is ``feature`` are kept; the name is
    ``gene_name`` (GTF) or ``gene_name``/``Name`` (GFF3), else the gene id. If the
    file has no ``gene`` rows, genes are assembled from their exons (min start,
    max end). Duplicate names keep their first record.
    """
    path = os.fspath(path)
    gff = path.rstrip(".gz").endswith((".gff", ".gff3"))
    recs, exons = {}, {}
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 9:
                raise ValueError(f"{path}: not a GTF/GFF line (needs 9 tab-separated columns): {line[:80]!r}")
            chrom, _, feat, start, end, _, strand, _, attrs = parts[:9]
            name = _gtf_name(attrs, gff)
            if name is None:
                continue
            rec = (chrom, int(start) - 1, int(end), strand)
            if feat == feature:
                recs.setdefault(name, rec)
            elif feat == "exon":
                c, s, e, st = exons.get(name, rec)
                exons[name] = (c, min(s, rec[1]), max(e, rec[2]), st)
    if not recs:
        recs = exons
    if not recs:
        raise ValueError(f"{path}: no '{feature}' or 'exon' records with a gene name")
    names = list(recs)
    chrom, start, end, strand = zip(*(recs[n] for n in names))
    return Intervals(np.array(chrom), np.array(start, np.int64), np.array(end, np.int64), np.array(strand),
                     np.array(names))


def _table_rows(path_or_rows) -> list:
    """Whitespace-split rows of a table given as a path, a file object or a sequence of rows.

    Blank lines and header lines (starting with ``#``, ``chrom`` or ``track``) are skipped.
    """
    if isinstance(path_or_rows, (str, os.PathLike)):
        with _open_text(path_or_rows) as fh:
            lines = list(fh)
    elif isinstance(path_or_rows, io.IOBase):
        lines = list(path_or_rows)
    else:
        return [list(r) for r in path_or_rows]
    return [ln.split() for ln in lines if ln.strip() and not ln.startswith(("#", "chrom", "track"))]


def read_bed(path_or_rows) -> Intervals:
    """Genes from a BED-like table: chrom, start, end, strand, name (tab- or whitespace-separated).

    A path, a file object, or a sequence of 5-tuples. Coordinates are BED's
    0-based half-open ones. A header line starting with ``#`` or ``chrom`` is skipped.
    """
    rows = _table_rows(path_or_rows)
    bad = [r for r in rows if len(r) < 5]
    if bad:
        raise ValueError(f"BED-like gene table needs 5 columns (chrom, start, end, strand, name); got {bad[0]!r}")
    chrom, start, end, strand, name = (list(c) for c in zip(*[r[:5] for r in rows]))
    return Intervals(np.array(chrom), np.array(start, np.int64), np.array(end, np.int64), np.array(strand),
                     np.array(name))


def parse_regions(names) -> Intervals:
    """Regions from names like ``chr1:100-200``, ``chr1_100_200`` or ``chr1-100-200`` (0-based, half-open)."""
    names = np.asarray(names).astype(str)
    chrom, start, end = [], [], []
    for n in names:
        m = _REGION_RE.match(n)
        if m is None:
            raise ValueError(f"cannot read a region from {n!r}; expected 'chrom:start-end' or 'chrom_start_end'")
        s, e = int(m["start"]), int(m["end"])
        if e < s:
            raise ValueError(f"region {n!r} ends before it starts")
        chrom.append(m["chrom"])
        start.append(s)
        end.append(e)
    return Intervals(np.array(chrom), np.array(start, np.int64), np.array(end, np.int64),
                     np.full(names.shape[0], "."), names)


def read_regions(path_or_rows) -> Intervals:
    """Regions from a BED table (chrom, start, end[, name, …]): a path, a file object or a sequence of rows.

    Without a 4th column the name is ``chrom:start-end``.
    """
    rows = _table_rows(path_or_rows)
    if any(len(r) < 3 for r in rows):
        raise ValueError("a region table needs at least 3 columns: chrom, start, end")
    chrom = np.array([r[0] for r in rows])
    start = np.array([int(r[1]) for r in rows], np.int64)
    end = np.array([int(r[2]) for r in rows], np.int64)
    name = np.array([r[3] if len(r) > 3 else f"{r[0]}:{r[1]}-{r[2]}" for r in rows])
    return Intervals(chrom, start, end, np.full(len(rows), "."), name)


def gene_activity(genes: Intervals, regions: Intervals, *, promoter: int = 2000, max_distance: int = 0,
                  decay: float = 5000.0) -> GeneActivity:
    """Link regions to genes by gene body + promoter overlap, and optionally by distance with decay.

    Parameters
    ----------
    genes : Intervals
        From :func:`read_gtf` or :func:`read_bed`. Strand ``-`` puts the promoter
        after ``end``; any other strand before ``start``.
    regions : Intervals
        From :func:`parse_regions` (or :func:`read_bed`).
    promoter : int
        Bases upstream of the transcription start added to the gene body.
    max_distance : int
        Also link regions within this many bases of the gene body + promoter
        window (0: overlap only).
    decay : float
        Length scale of the distance weight ``exp(−d / decay)``; overlapping
        regions have ``d = 0`` and weight 1.

    Returns
    -------
    GeneActivity
        Binary links (overlap only) or weights in (0, 1], genes × regions, CSR.
    """
    if promoter < 0 or max_distance < 0 or decay <= 0:
        raise ValueError("promoter and max_distance must be >= 0 and decay > 0")
    minus = genes.strand == "-"
    w_start = np.where(minus, genes.start, genes.start - promoter).clip(min=0)
    w_end = np.where(minus, genes.end + promoter, genes.end)
    rows, cols, vals = [], [], []
    reg_chrom = regions.chrom
    for chrom in np.unique(genes.chrom):
        r_idx = np.flatnonzero(reg_chrom == chrom)
        if r_idx.size == 0:
            continue
        order = np.argsort(regions.start[r_idx], kind="stable")
        r_idx = r_idx[order]
        r_start, r_end = regions.start[r_idx], regions.end[r_idx]
        max_len = int((r_end - r_start).max())
        g_idx = np.flatnonzero(genes.chrom == chrom)
        lo_q = w_start[g_idx] - max_distance - max_len
        hi_q = w_end[g_idx] + max_distance
        lo = np.searchsorted(r_start, lo_q, side="left")
        hi = np.searchsorted(r_start, hi_q, side="right")  # regions starting by the window's end (+ distance)
        for g, a, b in zip(g_idx, lo, hi):
            if b <= a:
                continue
            s, e = r_start[a:b], r_end[a:b]
            gap = np.maximum(np.maximum(w_start[g] - e, s - w_end[g]), 0)  # 0 when overlapping
            overlap = (s < w_end[g]) & (e > w_start[g])
            keep = overlap | ((max_distance > 0) & (gap <= max_distance))
            if not keep.any():
                continue
            rows.append(np.full(int(keep.sum()), g))
            cols.append(r_idx[a:b][keep])
            vals.append(np.where(overlap[keep], 1.0, np.exp(-gap[keep] / decay)))
    if rows:
        rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        rows = cols = np.zeros(0, np.int64)
        vals = np.zeros(0)
    M = sp.csr_matrix((vals, (rows, cols)), shape=(len(genes), len(regions)))
    M.sum_duplicates()
    return GeneActivity(M, genes.name, regions.name)

"""Gene activity from genomic coordinates: which ATAC regions regulate which gene.

Genes come from a GTF/GFF file or a BED table (BED4/BED6: chrom, start, end,
name[, score, strand]); regions from names such as ``chr1:100-200``,
``chr1_100_200`` or ``chr1-100-200`` (or a BED table such as Cell Ranger ATAC's
``peaks.bed``). A region is linked to a gene when it overlaps
the gene body extended upstream by ``promoter`` bases (the gene body +
promoter rule of Signac's ``GeneActivity`` and ArchR's gene score), and,
optionally, when it lies within ``max_distance`` of that window, with weight
``exp(−distance / decay)`` (a distance decay as in ArchR and scGLUE).

Contig names are matched after harmonisation (``chr1`` and ``1`` are one
contig, as are ``chrM``, ``M`` and ``MT``), so a UCSC-style peak set works with
an Ensembl GTF and vice versa. Gene names are matched to the RNA's
``var_names`` on the gene symbol or on the gene id with its version stripped
(``ENSG00000000003.15`` → ``ENSG00000000003``), whichever matches more
(:meth:`GeneActivity.aligned`); every copy of a duplicated ``var_name`` gets
the links of its gene. :func:`link_coverage` counts how many genes and regions
have at least one link.

All coordinates are handled as 0-based, half-open intervals (GTF/GFF's 1-based
closed starts are shifted on reading). The search sorts regions per
chromosome once and finds each gene's candidates with binary search: time
O((genes + regions) log regions + links), never a loop over all pairs.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp

from .errors import LinkCoverageWarning

_REGION_RE = re.compile(r"^(?P<chrom>.+?)[:_-](?P<start>\d+)[-_](?P<end>\d+)$")


@dataclass
class Intervals:
    """Named genomic intervals (0-based, half-open). ``strand`` is ``"+"``, ``"-"`` or ``"."``."""

    chrom: np.ndarray
    start: np.ndarray
    end: np.ndarray
    strand: np.ndarray
    name: np.ndarray
    gene_id: Optional[np.ndarray] = None  #: the gene ids (GTF ``gene_id`` / GFF ``ID``), when the source has them

    def __len__(self):
        return self.name.shape[0]


@dataclass
class GeneActivity:
    """A genes × regions link matrix with the names of its rows and columns.

    ``gene_ids`` (optional) holds the gene ids next to the symbols in ``genes``
    (from a GTF), so that :meth:`aligned` can match RNA features named either way.
    """

    matrix: sp.csr_matrix
    genes: np.ndarray
    regions: np.ndarray
    gene_ids: Optional[np.ndarray] = None

    def aligned(self, genes, regions, gene_key: str = "auto") -> sp.csr_matrix:
        """The matrix re-indexed to the given gene and region names (missing names give empty rows/columns).

        Parameters
        ----------
        genes : sequence of str, length n_genes
            The RNA feature names (``var_names``), in order. A name that occurs
            several times gets the links of its gene in every copy.
        regions : sequence of str, length n_regions
            The ATAC feature names. Names that read as coordinates
            (``chr1:100-200``, ``1_100_200`` …) are matched on the coordinates,
            with contig names harmonised; others by exact name.
        gene_key : {"auto", "name", "id"}
            Match ``genes`` against the gene symbols (``"name"``), against the
            gene ids with any version suffix stripped (``"id"``), or whichever of
            the two matches more genes (``"auto"``, the default).

        Returns
        -------
        scipy.sparse.csr_matrix, shape (n_genes, n_regions)
        """
        if gene_key not in ("auto", "name", "id"):
            raise ValueError(f"gene_key must be 'auto', 'name' or 'id', got {gene_key!r}")
        targets = np.asarray(genes).astype(str)
        options = []
        if gene_key in ("auto", "name"):
            options.append(_positions(self.genes, targets))
        if gene_key in ("auto", "id"):
            ids = self.gene_ids if self.gene_ids is not None else self.genes
            options.append(_positions(ids, targets, key=strip_version))
        gi = max(options, key=lambda o: sum(len(t) > 0 for t in o))
        ri = _positions(self.regions, regions, key=region_key)
        M = self.matrix.tocoo()
        e, rows = _expand(M.row, gi)  # one entry per copy of the gene among ``genes``
        e2, cols = _expand(M.col[e], ri)
        out = sp.csr_matrix((M.data[e][e2], (rows[e2], cols)), shape=(len(targets), len(np.asarray(regions))))
        out.sum_duplicates()
        return out


_VERSION = re.compile(r"^(.+)\.\d+$")


def strip_version(name: str) -> str:
    """A gene id without its version suffix: ``ENSG00000000003.15`` → ``ENSG00000000003``.

    Only ids of the Ensembl / GENCODE form (``ENS…`` followed by digits) are
    changed; gene symbols such as ``RP11-34P13.3`` are left as they are.
    """
    m = _VERSION.match(name)
    return m.group(1) if m is not None and re.match(r"^ENS[A-Z]*\d+$", m.group(1)) else name


def normalize_chrom(chrom: str) -> str:
    """A contig name in one convention: no ``chr`` prefix, ``M`` → ``MT`` (``chr1`` → ``1``, ``chrM`` → ``MT``)."""
    c = chrom[3:] if chrom[:3].lower() == "chr" else chrom
    return "MT" if c in ("M", "m", "Mt", "mt") else c


def region_key(name: str) -> str:
    """A region's matching key: ``contig:start-end`` with the contig harmonised, or the name itself."""
    m = _REGION_RE.match(name)
    if m is None:
        return name
    return f"{normalize_chrom(m['chrom'])}:{int(m['start'])}-{int(m['end'])}"


def _positions(source_names, target_names, key=None) -> list:
    """For each entry of ``source_names``, the indices of its matches in ``target_names`` (a tuple, maybe empty)."""
    index = {}
    for i, n in enumerate(np.asarray(target_names).astype(str)):
        index.setdefault(key(n) if key else n, []).append(i)
    return [tuple(index.get(key(n) if key else n, ())) for n in np.asarray(source_names).astype(str)]


def _expand(source_idx: np.ndarray, matches: list):
    """For entries pointing at ``source_idx``, one row per match: (entry index, matched target index)."""
    counts = np.array([len(m) for m in matches], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    flat = np.fromiter((t for m in matches for t in m), dtype=np.int64, count=int(ptr[-1]))
    per = counts[source_idx]
    entry = np.repeat(np.arange(source_idx.size), per)
    within = np.arange(entry.size) - np.repeat(np.cumsum(per) - per, per)
    return entry, flat[ptr[source_idx[entry]] + within]


@dataclass
class LinkCoverage:
    """How much of each modality the gene activity links reach.

    Attributes
    ----------
    n_genes, n_regions : int
        RNA genes and ATAC regions in the fit.
    genes_linked, regions_linked : int
        How many of them have at least one nonzero link.
    """

    n_genes: int
    n_regions: int
    genes_linked: int
    regions_linked: int

    @property
    def gene_share(self) -> float:
        return self.genes_linked / max(self.n_genes, 1)

    @property
    def region_share(self) -> float:
        return self.regions_linked / max(self.n_regions, 1)

    def as_dict(self) -> dict:
        """Plain numbers (for ``.uns``, JSON and the report)."""
        return {"n_genes": self.n_genes, "genes_linked": self.genes_linked, "gene_share": self.gene_share,
                "n_regions": self.n_regions, "regions_linked": self.regions_linked,
                "region_share": self.region_share}

    def __str__(self) -> str:
        return (f"{self.genes_linked} of {self.n_genes} RNA genes ({100 * self.gene_share:.1f} %) and "
                f"{self.regions_linked} of {self.n_regions} ATAC regions ({100 * self.region_share:.1f} %) "
                "have at least one gene activity link")


#: Below these shares of linked genes / regions a build of the links warns (see :func:`check_links`).
#: Measured with :func:`link_coverage` on the shared data sets: SNARE-seq mouse cortex (scMoMaT's links)
#: 99.8 % of genes and 100 % of regions; the three SymSim simulations 98.7–99.3 % of genes and 44.6–44.7 %
#: of regions (distal regions are legitimately unlinked). A correct build is far above both thresholds; a
#: half-failed name or contig match falls below them.
MIN_GENE_SHARE = 0.5
MIN_REGION_SHARE = 0.1


def link_coverage(matrix) -> LinkCoverage:
    """Count the genes (rows) and regions (columns) of a genes × regions link matrix with a nonzero link."""
    M = sp.csr_matrix(matrix)
    nz = M.data != 0
    rows = np.unique(np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))[nz])
    cols = np.unique(M.indices[nz])
    return LinkCoverage(int(M.shape[0]), int(M.shape[1]), int(rows.size), int(cols.size))


def _examples(names, n: int = 3) -> str:
    names = list(np.asarray(names).astype(str)[:n])
    return ", ".join(repr(str(x)) for x in names) if names else "(none)"


def check_links(matrix, gene_names=None, region_names=None, *, linked_genes=None, linked_regions=None,
                stacklevel: int = 2) -> LinkCoverage:
    """Coverage of a built link matrix: an error when there is no link, a warning when there are few.

    Parameters
    ----------
    matrix : sparse matrix, shape (n_genes, n_regions)
        The links, aligned to the RNA genes and ATAC regions.
    gene_names, region_names : sequence of str, optional
        The RNA and ATAC feature names (quoted as examples in the error).
    linked_genes, linked_regions : sequence of str, optional
        Names on the other side of the match (the GTF's genes, the link
        table's regions), quoted next to them so the mismatch can be seen.

    Raises
    ------
    ValueError
        When no gene has any link: the modalities would not be bridged at all.

    Warns
    -----
    LinkCoverageWarning
        When fewer than ``MIN_GENE_SHARE`` of the genes or ``MIN_REGION_SHARE``
        of the regions are linked.
    """
    import warnings

    cov = link_coverage(matrix)
    logging.getLogger("fastjmt").info("gene activity built: %s", cov)
    hint = ""
    if gene_names is not None or region_names is not None:
        hint = (f" RNA genes look like {_examples(gene_names if gene_names is not None else [])}"
                + (f" and the gene annotation's like {_examples(linked_genes)}" if linked_genes is not None else "")
                + f"; ATAC regions look like {_examples(region_names if region_names is not None else [])}"
                + (f" and the linked regions like {_examples(linked_regions)}" if linked_regions is not None else "")
                + ".")
    if cov.genes_linked == 0:
        raise ValueError("the gene activity has no link between the RNA genes and the ATAC regions, so nothing "
                         f"bridges the modalities.{hint} Check that the gene names (symbols or Ensembl ids, "
                         "gene_key=) and the genome build / contig names of the annotation match the data")
    if cov.gene_share < MIN_GENE_SHARE or cov.region_share < MIN_REGION_SHARE:
        warnings.warn(f"low gene activity coverage: {cov}.{hint} Correct builds of the shared data link "
                      f"over 98 % of genes; check gene names and contig names", LinkCoverageWarning,
                      stacklevel=stacklevel)
    return cov


def _open_text(path):
    path = os.fspath(path)
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


_ATTR_GTF = re.compile(r'(\S+)\s+"([^"]*)"')


def _gtf_name(attrs: str, gff: bool):
    """(name, id) of a GTF/GFF record: the symbol if there is one, else the id; the id, else the name."""
    if gff:
        fields = dict(kv.split("=", 1) for kv in attrs.strip().strip(";").split(";") if "=" in kv)
        name = next((fields[k] for k in ("gene_name", "Name") if k in fields), None)
        gid = next((fields[k] for k in ("gene_id", "ID") if k in fields), None)
        if gid is not None and gid.startswith("gene:"):
            gid = gid[5:]
    else:
        fields = dict(_ATTR_GTF.findall(attrs))
        name, gid = fields.get("gene_name"), fields.get("gene_id")
    if name is None and gid is None:
        return None, None
    return (name or gid), (gid or name)


def read_gtf(path, feature: str = "gene") -> Intervals:
    """Genes from a GTF or GFF3 file (optionally gzipped).

    Rows whose feature column is ``feature`` are kept; the name is
    ``gene_name`` (GTF) or ``gene_name``/``Name`` (GFF3), else the gene id, and
    ``gene_id`` holds the id (GTF ``gene_id``, GFF3 ``gene_id``/``ID``). If the
    file has no ``gene`` rows, genes are assembled from their exons (min start,
    max end). Duplicate names keep their first record.
    """
    path = os.fspath(path)
    gff = (path[:-3] if path.endswith(".gz") else path).endswith((".gff", ".gff3"))
    recs, exons, ids = {}, {}, {}
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 9:
                raise ValueError(f"{path}: not a GTF/GFF line (needs 9 tab-separated columns): {line[:80]!r}")
            chrom, _, feat, start, end, _, strand, _, attrs = parts[:9]
            name, gid = _gtf_name(attrs, gff)
            if name is None:
                continue
            ids.setdefault(name, gid)
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
                     np.array(names), np.array([ids[n] for n in names]))


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


_STRANDS = ("+", "-", ".")


def _is_number(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def read_bed(path_or_rows) -> Intervals:
    """Genes from a BED table, read as the BED specification defines its columns.

    BED4 ``chrom, start, end, name``; BED5 adds ``score``; BED6 and wider
    (BED12 …) have ``strand`` in the sixth column. A 5-column table whose fourth
    column is a strand (``+``/``-``/``.``) and whose fifth is not a score is read
    in fastjmt's older order ``chrom, start, end, strand, name``. Tab- or
    whitespace-separated; a path (optionally gzipped), a file object, or a
    sequence of rows. Coordinates are BED's 0-based half-open ones. Header
    lines starting with ``#``, ``chrom`` or ``track`` are skipped.

    Raises
    ------
    ValueError
        On a row with fewer than 4 columns or a non-integer start/end.
    """
    rows = _table_rows(path_or_rows)
    if not rows:
        raise ValueError("the BED gene table has no rows")
    bad = [r for r in rows if len(r) < 4]
    if bad:
        raise ValueError(f"a BED gene table needs at least 4 columns (chrom, start, end, name[, score, strand]); "
                         f"got {bad[0]!r}")
    chrom, start, end, strand, name = [], [], [], [], []
    for r in rows:
        r = [str(x) for x in r]
        if len(r) == 5 and r[3] in _STRANDS and not _is_number(r[4]):  # chrom, start, end, strand, name
            st, nm = r[3], r[4]
        else:
            nm, st = r[3], (r[5] if len(r) >= 6 else ".")
        try:
            s0, e0 = int(r[1]), int(r[2])
        except ValueError:
            raise ValueError(f"BED start and end must be integers; got {r[:6]!r}") from None
        chrom.append(r[0])
        start.append(s0)
        end.append(e0)
        strand.append(st if st in _STRANDS else ".")
        name.append(nm)
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
        From :func:`read_gtf` or :func:`read_bed`. Contig names are compared
        after :func:`normalize_chrom` (``chr1`` = ``1``, ``chrM`` = ``MT``). Strand ``-`` puts the promoter
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
    reg_chrom = np.array([normalize_chrom(c) for c in np.asarray(regions.chrom).astype(str)])
    gene_chrom = np.array([normalize_chrom(c) for c in np.asarray(genes.chrom).astype(str)])
    for chrom in np.unique(gene_chrom):
        r_idx = np.flatnonzero(reg_chrom == chrom)
        if r_idx.size == 0:
            continue
        order = np.argsort(regions.start[r_idx], kind="stable")
        r_idx = r_idx[order]
        r_start, r_end = regions.start[r_idx], regions.end[r_idx]
        max_len = int((r_end - r_start).max())
        g_idx = np.flatnonzero(gene_chrom == chrom)
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
    return GeneActivity(M, genes.name, regions.name, genes.gene_id)

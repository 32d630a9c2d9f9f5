"""The command line: ``fastjmt`` (or ``python -m fastjmt``).

``fastjmt`` / ``fastjmt demo``
    Simulates 2,000 RNA + 2,000 ATAC cells from five shared cell types, fits
    scJMT and prints the ARI per modality and pooled, the epochs and the time.
    ``--scenario unequal`` runs the paper's scenario 2 shape (RNA three types,
    ATAC two, two shared).
``fastjmt fit --rna RNA --atac ATAC (--gene-activity GA | --genes GTF) --n-shared N --out DIR``
    Fits files on disk (``.h5ad``, ``.npz`` scipy sparse, ``.mtx`` Matrix
    Market; cells × features) and writes the result, cluster tables, a report
    and figures to DIR (see :func:`fastjmt.report.write_report`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "fit":
        return fit_files(argv[1:])
    if argv and argv[0] == "demo":
        argv = argv[1:]
    return demo(argv)


def _read(path, layer=None):
    """(matrix, names of rows, names of columns) of a .h5ad, .npz or .mtx file."""
    import scipy.io
    import scipy.sparse as sp

    p = str(path)
    if p.endswith(".h5ad"):
        try:
            import anndata
        except ImportError:
            raise SystemExit('reading .h5ad needs anndata: pip install "fastjmt[anndata]"') from None
        from .adata import read_matrix

        ad = anndata.read_h5ad(p, backed="r")
        return read_matrix(ad, layer), np.asarray(ad.obs_names), np.asarray(ad.var_names)
    if p.endswith(".npz"):
        return sp.load_npz(p).tocsr(), None, None
    if p.endswith((".mtx", ".mtx.gz")):
        return sp.csr_matrix(scipy.io.mmread(p)), None, None
    raise SystemExit(f"{p}: unknown format (use .h5ad, .npz or .mtx)")


def _names(path):
    return None if path is None else np.loadtxt(path, dtype=str, delimiter="\t", ndmin=1)


def fit_files(argv) -> int:
    """``fastjmt fit``: fit files on disk and write a report."""
    ap = argparse.ArgumentParser(prog="fastjmt fit", description="Fit scJMT to files on disk and write a report.")
    ap.add_argument("--rna", required=True, help="RNA cells × genes (.h5ad, .npz or .mtx)")
    ap.add_argument("--atac", required=True, help="ATAC cells × regions (.h5ad, .npz or .mtx)")
    ap.add_argument("--gene-activity", help="genes × regions links (.npz or .mtx), in the files' feature order")
    ap.add_argument("--genes", help="gene coordinates (GTF/GFF, or BED-like .bed/.tsv) to build the gene activity")
    ap.add_argument("--promoter", type=int, default=2000, help="bases upstream of the TSS added to the gene body")
    ap.add_argument("--max-distance", type=int, default=0, help="also link regions this close, weighted by distance")
    ap.add_argument("--gene-names", help="text file: gene names, one per line (for .npz/.mtx with --genes)")
    ap.add_argument("--region-names", help="text file: region names like chr1:100-200 (for .npz/.mtx with --genes)")
    ap.add_argument("--rna-layer")
    ap.add_argument("--atac-layer")
    ap.add_argument("--rna-labels", help="text file of true RNA labels (optional: adds ARI/NMI to the report)")
    ap.add_argument("--atac-labels", help="text file of true ATAC labels")
    ap.add_argument("--n-shared", type=int, required=True)
    ap.add_argument("--n-rna-only", type=int, default=0)
    ap.add_argument("--n-atac-only", type=int, default=0)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--checkpoint", help="write checkpoints here (resume with --resume)")
    ap.add_argument("--resume")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    a = ap.parse_args(argv)
    import fastjmt
    from . import genome
    from .report import write_report

    G, rna_cells, gnames = _read(a.rna, a.rna_layer)
    R, atac_cells, rnames = _read(a.atac, a.atac_layer)
    gnames = _names(a.gene_names) if a.gene_names else gnames
    rnames = _names(a.region_names) if a.region_names else rnames
    if a.gene_activity:
        A, _, _ = _read(a.gene_activity)
    elif a.genes:
        if gnames is None or rnames is None:
            raise SystemExit("--genes needs feature names: use .h5ad inputs or --gene-names/--region-names")
        base = a.genes[:-3] if a.genes.endswith(".gz") else a.genes
        genes = genome.read_bed(a.genes) if base.endswith((".bed", ".tsv", ".txt")) else genome.read_gtf(a.genes)
        A = genome.gene_activity(genes, genome.parse_regions(rnames), promoter=a.promoter,
                                 max_distance=a.max_distance).aligned(gnames, rnames)
    else:
        raise SystemExit("pass --gene-activity or --genes")
    res = fastjmt.fit(G, R, A, n_shared=a.n_shared, n_rna_only=a.n_rna_only, n_atac_only=a.n_atac_only,
                      max_iter=a.max_iter, random_state=a.seed, n_init=a.n_init, n_threads=a.threads,
                      dtype=np.dtype(a.dtype), verbose=a.verbose, checkpoint=a.checkpoint, resume=a.resume)
    paths = write_report(res, a.out, rna_cells, atac_cells, _names(a.rna_labels), _names(a.atac_labels))
    print(f"fit: {res.n_iter} epochs, converged={res.converged}, loss {res.loss:.6g}, {res.fit_seconds:.2f}s")
    print(f"cells per cluster (RNA): {np.bincount(res.labels_rna, minlength=res.n_clusters).tolist()}")
    print(f"cells per cluster (ATAC): {np.bincount(res.labels_atac, minlength=res.n_clusters).tolist()}")
    print(f"wrote {', '.join(sorted(os.path.basename(p) for p in paths.values()))} to {a.out}")
    return 0


class _CompileTimer:
    """Seconds Numba spent compiling while the body ran (its compile events, nested ones counted once).

    Loading kernels from Numba's on-disk cache is not compiling: a warm run reads 0.
    """

    def __enter__(self):
        self.seconds, self._cm = 0.0, None
        try:
            from numba.core import event
        except ImportError:  # pragma: no cover - an old Numba without the event API
            return self
        self._cm = event.install_timer("numba:compile", self._add)
        self._cm.__enter__()
        return self

    def _add(self, seconds):
        self.seconds += seconds

    def __exit__(self, *exc):
        if self._cm is not None:
            self._cm.__exit__(*exc)
        return False


def demo(argv) -> int:
    """``fastjmt demo``: the main job on built-in simulated data."""
    ap = argparse.ArgumentParser(prog="fastjmt", description="Fit scJMT on built-in simulated data and score it "
                                 "(or 'fastjmt fit --help' for your own files).")
    ap.add_argument("--scenario", choices=("equal", "unequal"), default="equal",
                    help="equal: 5 shared types; unequal: RNA 3 types, ATAC 2, 2 shared")
    ap.add_argument("--n-cells", type=int, default=2000, help="cells per modality")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)

    import fastjmt

    layout = dict(n_shared=5) if a.scenario == "equal" else dict(n_shared=2, n_rna_only=1)
    t0 = time.perf_counter()
    data = fastjmt.simulate(n_rna=a.n_cells, n_atac=a.n_cells, random_state=a.seed, **layout)
    t_sim = time.perf_counter() - t0
    print(f"simulated: RNA {data.rna.shape} ({data.rna.nnz} nonzeros), ATAC {data.atac.shape} "
          f"({data.atac.nnz} nonzeros), scenario {a.scenario} {layout}, {t_sim:.1f}s")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, _CompileTimer() as compiled:
        warnings.simplefilter("always", fastjmt.ConvergenceWarning)
        res = fastjmt.fit(data.rna, data.atac, data.gene_activity, random_state=a.seed, n_threads=a.threads,
                          dtype=np.dtype(a.dtype), verbose=int(a.verbose), **layout)
    t_fit = time.perf_counter() - t0
    s = fastjmt.pooled_scores(res, data.rna_labels, data.atac_labels)
    print(f"fit: {res.n_iter} epochs, converged={res.converged}, loss {res.loss:.6g}, {t_fit:.2f}s")
    if compiled.seconds >= 0.05:
        print(f"compile: {compiled.seconds:.1f}s of the fit compiled the Numba kernels (first run on this machine; "
              "they are cached now, later runs load them)")
    else:
        print("compile: none (the Numba kernels came from the on-disk cache)")
    for w in caught:
        print(f"warning: {w.message}")
    print(f"ARI  RNA {s['ari_rna']:.3f}  ATAC {s['ari_atac']:.3f}  pooled {s['ari_pooled']:.3f}")
    print(f"NMI  RNA {s['nmi_rna']:.3f}  ATAC {s['nmi_atac']:.3f}  pooled {s['nmi_pooled']:.3f}")
    if res.n_rna_only:
        lo, hi = res.n_shared, res.n_shared + res.n_rna_only
        share = np.mean((res.columns_atac >= lo) & (res.columns_atac < hi))
        print(f"ATAC cells in RNA-only clusters: {100 * share:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``fastjmt`` (or ``python -m fastjmt``).

``fastjmt`` / ``fastjmt demo``
    Simulates 2,000 RNA + 2,000 ATAC cells from five shared cell types, fits
    scJMT and prints the ARI per modality and pooled, the epochs and the time.
    ``--scenario unequal`` runs the paper's scenario 2 shape (RNA three types,
    ATAC two, two shared).
``fastjmt transform --model DIR --rna NEW [--atac NEW] --out DIR2``
    Maps new cells onto the fit ``fastjmt fit`` wrote to DIR, without
    refitting it (:func:`fastjmt.transform.map_cells`); features are matched
    by name when both sides have names (``genes.txt`` / ``regions.txt`` in
    DIR), else by position. Writes ``clusters_rna.tsv`` / ``clusters_atac.tsv``
    and ``mapped.npz`` (memberships and program activities) to DIR2.
``fastjmt fit --rna RNA --atac ATAC (--gene-activity GA | --genes GTF) --n-shared N --out DIR``
    Fits files on disk (``.h5ad``, ``.npz`` scipy sparse, ``.mtx`` Matrix
    Market, cells × features; or 10x Genomics output: a Cell Ranger ``.h5``
    or matrix folder) and writes the result, cluster tables, a report and
    figures to DIR (see :func:`fastjmt.report.write_report`).
    ``--multiome OUTS`` reads both modalities from a Cell Ranger ARC output.
    An input that cannot be used ends in one line naming the option and the
    file (exit status 2); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

from .options import DEFAULTS


def _command(name: str, run, args) -> int:
    """Run a subcommand; an input error becomes one line on stderr and exit status 2 (``--debug``: the traceback)."""
    debug = "--debug" in args
    try:
        return run([a for a in args if a != "--debug"])
    except (UsageError, ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        if debug:
            raise
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"fastjmt {name}: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A problem with the user's input: shown as one line, without a traceback (``--debug`` shows it)."""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"fit": fit_files, "transform": transform_files}
    if argv and argv[0] in commands:
        return _command(argv[0], commands[argv[0]], argv[1:])
    if argv and argv[0] == "demo":
        argv = argv[1:]
    return demo(argv)


def _read(path, layer=None, option="--rna", key=None):
    """(matrix, names of rows, names of columns) of a .h5ad, .npz, .mtx, 10x .h5 or 10x matrix folder.

    ``option`` is the command-line option named in errors; ``key`` the modality wanted ("rna" or "atac";
    by default the one ``option`` names).
    """
    import scipy.io
    import scipy.sparse as sp

    p = str(path)
    if not os.path.exists(p):
        raise UsageError(f"{option} {p}: no such file or folder")
    if os.path.isdir(p) or p.endswith(".h5"):
        from .adata import read_matrix
        from .tenx import read_10x

        mods = read_10x(p)
        key = key or ("atac" if option == "--atac" else "rna")
        ad = mods.get(key)
        if ad is None:
            other = "ATAC peaks" if key == "rna" else "gene expression"
            fix = ("a Cell Ranger ARC output holds both; pass single-modality files as --rna and --atac"
                   if option == "--multiome" else f"pass it as {'--atac' if key == 'rna' else '--rna'}")
            raise UsageError(f"{option} {p}: holds {other} only; {fix}")
        return read_matrix(ad, layer), np.asarray(ad.obs_names), np.asarray(ad.var_names)
    if p.endswith(".h5ad"):
        try:
            import anndata
        except ImportError:
            raise UsageError('reading .h5ad needs anndata: pip install "fastjmt[anndata]"') from None
        from .adata import read_matrix

        ad = anndata.read_h5ad(p, backed="r")
        return read_matrix(ad, layer), np.asarray(ad.obs_names), np.asarray(ad.var_names)
    if p.endswith(".npz"):
        return sp.load_npz(p).tocsr(), None, None
    if p.endswith((".mtx", ".mtx.gz")):
        return sp.csr_matrix(scipy.io.mmread(p)), None, None
    raise UsageError(f"{option} {p}: unknown format (use .h5ad, .npz, .mtx, a 10x .h5 or a 10x matrix folder)")


def _names(path, option):
    """Names from a text file: one per line; a 10x features.tsv (id, name, type) gives ids and symbols;
    a BED file (chrom, start, end, …) gives ``chrom:start-end``. Returns a list of candidate name arrays."""
    if path is None:
        return None
    from . import genome

    try:
        with genome._open_text(path) as fh:
            rows = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: cannot be read as text ({exc})") from None
    if not rows:
        raise UsageError(f"{option} {path}: is empty")
    width = min(len(r) for r in rows)
    if width >= 3 and all(r[1].isdigit() and r[2].isdigit() for r in rows[:100]):  # BED: chrom, start, end
        return [np.array([f"{r[0]}:{r[1]}-{r[2]}" for r in rows])]
    if width >= 2:  # 10x features.tsv: id, name[, type]: both tried against the annotation
        return [np.array([r[0] for r in rows]), np.array([r[1] for r in rows])]
    return [np.array([r[0] for r in rows])]


def _check_axis(M, names, option, file_option, path, axis_word):
    """The names must fit the matrix's columns; say "transposed?" when they fit its rows."""
    if names is None:
        return
    n = len(names)
    if M.shape[1] != n:
        hint = ("; they fit its rows: transposed? (10x .mtx files are features × cells: pass the 10x folder "
                "instead, or the transpose)") if M.shape[0] == n else ""
        raise UsageError(f"{option} {path}: {n} {axis_word} names but the matrix {file_option} is "
                         f"{M.shape[0]} × {M.shape[1]} (cells × {axis_word}s){hint}")


def fit_files(argv) -> int:
    """``fastjmt fit``: fit files on disk and write a report."""
    ap = argparse.ArgumentParser(
        prog="fastjmt fit", description="Fit scJMT to files on disk and write a report.",
        epilog="10x Genomics output: --rna and --atac take a Cell Ranger .h5 or matrix folder (e.g. "
               "outs/filtered_feature_bc_matrix.h5, outs/filtered_peak_bc_matrix/); --multiome takes a Cell Ranger "
               "ARC outs/ folder or its filtered_feature_bc_matrix.h5 and reads both modalities from it.")
    ap.add_argument("--rna", help="RNA cells × genes (.h5ad, .npz, .mtx, or a 10x .h5 / matrix folder)")
    ap.add_argument("--atac", help="ATAC cells × regions (.h5ad, .npz, .mtx, or a 10x .h5 / peak matrix folder)")
    ap.add_argument("--multiome", help="a Cell Ranger ARC outs/ folder or .h5: RNA and ATAC from one file "
                    "(fitted as unpaired)")
    ap.add_argument("--gene-activity", help="genes × regions links (.npz or .mtx), in the files' feature order")
    ap.add_argument("--genes", help="gene coordinates (GTF/GFF, or BED .bed/.tsv) to build the gene activity")
    ap.add_argument("--gene-key", choices=("auto", "name", "id"), default="auto",
                    help="match RNA features to the annotation by gene symbol, by gene id (version stripped) or "
                         "whichever matches more (default)")
    ap.add_argument("--promoter", type=int, default=2000, help="bases upstream of the TSS added to the gene body")
    ap.add_argument("--max-distance", type=int, default=0, help="also link regions this close, weighted by distance")
    ap.add_argument("--gene-names", help="gene names for .npz/.mtx with --genes: one per line, or a 10x features.tsv")
    ap.add_argument("--region-names", help="region names for .npz/.mtx with --genes: one per line (chr1:100-200), "
                    "or a BED file such as peaks.bed")
    ap.add_argument("--rna-layer")
    ap.add_argument("--atac-layer")
    ap.add_argument("--rna-labels", help="text file of true RNA labels (optional: adds ARI/NMI to the report)")
    ap.add_argument("--atac-labels", help="text file of true ATAC labels")
    ap.add_argument("--n-shared", type=int, required=True)
    ap.add_argument("--n-rna-only", type=int, default=DEFAULTS.n_rna_only)
    ap.add_argument("--n-atac-only", type=int, default=DEFAULTS.n_atac_only)
    ap.add_argument("--max-iter", type=int, default=DEFAULTS.max_iter)
    ap.add_argument("--seed", type=int, default=DEFAULTS.random_state)
    ap.add_argument("--n-init", type=int, default=DEFAULTS.n_init)
    ap.add_argument("--init", choices=("joint", "spectral", "random"), default=DEFAULTS.init,
                    help="starting point (see fastjmt.fit)")
    ap.add_argument("--resolution", type=float, default=DEFAULTS.resolution,
                    help="modularity resolution of the column merge that makes the clusters (lower: fewer); "
                         "0 keeps the argmax columns")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=("float32", "float64"), default=np.dtype(DEFAULTS.dtype).name)
    ap.add_argument("--checkpoint", help="write checkpoints here (resume with --resume)")
    ap.add_argument("--resume")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks for input errors")
    a = ap.parse_args(argv)
    import fastjmt
    from . import genome
    from .report import write_report

    if a.multiome:
        if a.rna or a.atac:
            ap.error("--multiome replaces --rna and --atac")
        a.rna = a.atac = a.multiome
        opt_rna = opt_atac = "--multiome"
    else:
        if not (a.rna and a.atac):
            ap.error("pass --rna and --atac, or --multiome")
        opt_rna, opt_atac = "--rna", "--atac"
    G, rna_cells, gnames = _wrap(opt_rna, a.rna, lambda: _read(a.rna, a.rna_layer, opt_rna, "rna"))
    R, atac_cells, rnames = _wrap(opt_atac, a.atac, lambda: _read(a.atac, a.atac_layer, opt_atac, "atac"))
    gcands = _names(a.gene_names, "--gene-names") if a.gene_names else (None if gnames is None else [gnames])
    rcands = _names(a.region_names, "--region-names") if a.region_names else (None if rnames is None else [rnames])
    if gcands is not None:
        for c in gcands[:1]:
            _check_axis(G, c, "--gene-names" if a.gene_names else opt_rna, opt_rna, a.gene_names or a.rna, "gene")
    if rcands is not None:
        _check_axis(R, rcands[0], "--region-names" if a.region_names else opt_atac, opt_atac,
                    a.region_names or a.atac, "region")
    caught_all = []
    if a.gene_activity:
        A, _, _ = _wrap("--gene-activity", a.gene_activity, lambda: _read(a.gene_activity, None, "--gene-activity"))
        _check_orientation(G, R, A, a, opt_rna, opt_atac)
        built = False
    elif a.genes:
        if gcands is None or rcands is None:
            raise UsageError("--genes needs feature names: use .h5ad or 10x inputs, or --gene-names/--region-names")
        from .adata import read_genes

        genes = _wrap("--genes", a.genes, lambda: read_genes(a.genes))
        rnames = rcands[0]
        regions = _wrap("--region-names" if a.region_names else opt_atac, a.region_names or a.atac,
                        lambda: genome.parse_regions(rnames))
        ga = genome.gene_activity(genes, regions, promoter=a.promoter, max_distance=a.max_distance)
        A, gnames = max(((ga.aligned(c, rnames, gene_key=a.gene_key), c) for c in gcands),
                        key=lambda t: genome.link_coverage(t[0]).genes_linked)
        example = ga.gene_ids if a.gene_key == "id" and ga.gene_ids is not None else ga.genes
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", genome.LinkCoverageWarning)
            try:
                genome.check_links(A, gnames, rnames, linked_genes=example)
            except ValueError as exc:
                raise UsageError(f"--genes {a.genes}: {exc}") from None
        caught_all += caught
        built = True
    else:
        raise UsageError("pass --gene-activity or --genes")
    labels = [_wrap(opt, p, lambda p=p: np.loadtxt(p, dtype=str, delimiter="\t", ndmin=1)) if p else None
              for opt, p in (("--rna-labels", a.rna_labels), ("--atac-labels", a.atac_labels))]
    for lab, opt, path, n in ((labels[0], "--rna-labels", a.rna_labels, G.shape[0]),
                              (labels[1], "--atac-labels", a.atac_labels, R.shape[0])):
        if lab is not None and lab.shape[0] != n:  # before the fit, not in the report after it
            raise UsageError(f"{opt} {path}: has {lab.shape[0]} labels, but the matrix has {n} cells (one per line)")
    if a.resolution < 0:
        raise UsageError(f"--resolution must be >= 0 (0 keeps the argmax columns), got {a.resolution}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fastjmt.fit(G, R, A, n_shared=a.n_shared, n_rna_only=a.n_rna_only, n_atac_only=a.n_atac_only,
                          max_iter=a.max_iter, random_state=a.seed, n_init=a.n_init, n_threads=a.threads,
                          dtype=np.dtype(a.dtype), verbose=a.verbose, checkpoint=a.checkpoint, resume=a.resume,
                          init=a.init, resolution=a.resolution or None)
    caught_all += [w for w in caught if not (built and issubclass(w.category, genome.LinkCoverageWarning))]
    for w in caught_all:  # one line each, no library file and line
        print(f"fastjmt: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:  # e.g. the embedding's: one line each, as above
        warnings.simplefilter("always")
        paths = write_report(res, a.out, rna_cells, atac_cells, *labels)
    for w in caught:
        print(f"fastjmt: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    for fname, cands in (("genes.txt", gcands), ("regions.txt", rcands)):  # for `fastjmt transform`
        if cands is not None:
            np.savetxt(os.path.join(a.out, fname), np.asarray(cands[0]).astype(str), fmt="%s")
    cov = genome.LinkCoverage(res.link_coverage["n_genes"], res.link_coverage["n_regions"],
                              res.link_coverage["genes_linked"], res.link_coverage["regions_linked"])
    print(f"gene activity: {cov}")
    print(f"fit: {res.n_iter} epochs, converged={res.converged}, loss {res.loss:.6g}, {res.fit_seconds:.2f}s")
    keep_r, keep_a = ~res.empty_rna, ~res.empty_atac
    print(f"cells per cluster (RNA): {np.bincount(res.labels_rna[keep_r], minlength=res.n_clusters).tolist()}")
    print(f"cells per cluster (ATAC): {np.bincount(res.labels_atac[keep_a], minlength=res.n_clusters).tolist()}")
    n_empty = int(res.empty_rna.sum()), int(res.empty_atac.sum())
    if any(n_empty):
        print(f"cells without counts (no cluster, 'NA' in the tables): RNA {n_empty[0]}, ATAC {n_empty[1]}")
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


def _wrap(option, path, fn):
    """Run ``fn``; an error becomes one line naming the option and the file."""
    try:
        return fn()
    except UsageError:
        raise
    except (ValueError, TypeError, KeyError, OSError, UnicodeDecodeError, ImportError) as exc:
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise UsageError(f"{option} {path}: {msg}") from exc


def _check_orientation(G, R, A, a, opt_rna, opt_atac):
    """Before the fit: a cells × features file given features × cells (the 10x .mtx orientation) is named."""
    g, r = A.shape
    for M, opt, path, n, what in ((G, opt_rna, a.rna, g, "genes"), (R, opt_atac, a.atac, r, "regions")):
        if M.shape[1] != n and M.shape[0] == n:
            raise UsageError(f"{opt} {path}: is {M.shape[0]} × {M.shape[1]}, but the gene activity has {n} {what}, "
                             "which fit its rows: transposed? (10x .mtx files are features × cells: pass the 10x "
                             "folder instead, or the transpose)")


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




def transform_files(argv) -> int:
    """``fastjmt transform``: new cells on disk mapped onto a fit on disk (see the module docstring)."""
    from .api import load_result
    from .transform import map_cells

    ap = argparse.ArgumentParser(prog="fastjmt transform",
                                 description="Map new cells onto a fit written by `fastjmt fit`, without refitting it.")
    ap.add_argument("--model", required=True, help="the --out folder of `fastjmt fit` (or its result.npz)")
    ap.add_argument("--rna", help="new RNA cells (.h5ad, .npz, .mtx, 10x .h5 or folder)")
    ap.add_argument("--atac", help="new ATAC cells")
    ap.add_argument("--rna-layer")
    ap.add_argument("--atac-layer")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks for input errors")
    a = ap.parse_args(argv)
    if a.rna is None and a.atac is None:
        raise UsageError("pass --rna, --atac or both (the new cells)")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        raise UsageError(f"--out {a.out}: is a file; pass a folder (it is created if needed)")
    folder = a.model if os.path.isdir(a.model) else os.path.dirname(os.path.abspath(a.model))
    path = os.path.join(a.model, "result.npz") if os.path.isdir(a.model) else a.model
    if not os.path.isfile(path):
        raise UsageError(f"--model {a.model}: no result.npz (pass the --out folder of `fastjmt fit`)")
    res = _wrap("--model", path, lambda: load_result(path))
    matrices, cells = {}, {}
    for name, p, layer, opt, fname in (("rna", a.rna, a.rna_layer, "--rna", "genes.txt"),
                                       ("atac", a.atac, a.atac_layer, "--atac", "regions.txt")):
        if p is None:
            continue
        M, rows, cols = _wrap(opt, p, lambda p=p, layer=layer, opt=opt: _read(p, layer, opt))
        M = M.tocsr()
        names_path = os.path.join(folder, fname)
        if cols is not None and os.path.isfile(names_path):
            want = np.loadtxt(names_path, dtype=str, delimiter="\t", ndmin=1)
            index = {n: i for i, n in enumerate(np.asarray(cols).astype(str))}
            missing = [str(n) for n in want if n not in index]
            if missing:
                raise UsageError(f"{opt} {p}: lacks {len(missing)} of the model's features, e.g. "
                                 f"{', '.join(missing[:3])}")
            M = M[:, [index[n] for n in want]]
        elif cols is not None:
            print(f"fastjmt: warning: {opt} {p} names its features but the model folder has no {fname}: features "
                  "are matched by position (fit from named files to match by name)", file=sys.stderr)
        cells[name] = np.arange(M.shape[0]).astype(str) if rows is None else np.asarray(rows).astype(str)
        matrices[name] = M
    mapped = {}
    for name, opt, p in (("rna", "--rna", a.rna), ("atac", "--atac", a.atac)):
        if name in matrices:
            mapped.update(_wrap(opt, p, lambda name=name: map_cells(res, **{name: matrices[name]})))
    os.makedirs(a.out, exist_ok=True)
    arrays = {}
    for name, m in mapped.items():
        with open(os.path.join(a.out, f"clusters_{name}.tsv"), "w") as fh:  # NA: no counts, no call
            fh.write("cell\tcluster\tcolumn\n")
            fh.writelines(f"{c}\t{'NA' if k < 0 else k}\t{'NA' if j < 0 else j}\n"
                          for c, k, j in zip(cells[name], m["labels"], m["columns"]))
        arrays[f"C_{name}"], arrays[f"programs_{name}"] = m["C"], m["programs"]
        print(f"{name}: {m['C'].shape[0]} cells mapped in {m['n_iter']} iterations ({int(m['empty'].sum())} "
              f"without counts: NA); cells per cluster: "
              f"{np.bincount(m['labels'][~m['empty']], minlength=res.n_clusters).tolist()}")
    np.savez_compressed(os.path.join(a.out, "mapped.npz"), **arrays)
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

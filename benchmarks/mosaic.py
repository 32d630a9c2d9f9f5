"""Mosaic integration measured: quality on simulated mosaics and the shared SNARE-seq mosaic, and cost.

Usage::

    python benchmarks/mosaic.py quality                          # simulated mosaic designs
    python benchmarks/mosaic.py quality --seeds 0,1,2,3,4 ../shared/data/snare_mouse_cortex_mosaic
    python benchmarks/mosaic.py cost [--cells 10000] [--repeat 5]

``quality`` fits every design with :func:`fastjmt.fit_mosaic`'s defaults and scores the default labels
(``result.labels[batch]``): ARI pooled over all cells, per batch, per modality (every cell with RNA; every
cell with ATAC, paired cells in both), the share of other batches' cells in each batch's private columns,
and the feature clusters against the simulator's programs. Each design is also fitted *without its paired
batches*: the unpaired two-matrix fit (:func:`fastjmt.fit`, same defaults) of its RNA-only against its
ATAC-only cells, scored on the same cells (``unpaired_rna_only``, ``unpaired_atac_only``); ``gain_atac``
is what the paired cells add to the ATAC-only batches' ARI. A folder in the layout of
``snare_mouse_cortex_mosaic`` (``paired_rna.npz``, ``paired_atac.npz``, ``rna_only_rna.npz``,
``atac_only_atac.npz``, ``gene_activity.npz``, ``*_labels.txt``) is read as one design.

``cost`` times one full-batch epoch of a simulated paired + RNA-only + ATAC-only mosaic against the sum
of the sparse products it needs (``X V`` and ``Xᵀ U`` of every block), alternating, as inside a fit
(``fit_threads``); the ratio is the mosaic's ``epoch / products``, to compare with the two-matrix fit's in
``benchmarks/ratios.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

import fastjmt

from protocol import markdown_table

#: design name -> simulate_mosaic keyword arguments
DESIGNS = {
    "paired_rna_atac": dict(),
    "private_rna_atac": dict(private={"rna": 1, "atac": 1}),
    "private_multiome": dict(private={"multiome": 1}),
    "two_rna_batches_effect": dict(design={"multiome": "paired", "rna": "rna", "rna2": "rna", "atac": "atac"},
                                   batch_effect=0.3),
    "weak_separation": dict(separation=0.5),
    "noisy_atac": dict(atac_noise=0.8),
}
SIZE = dict(n_cells=600, n_genes=400, n_regions=1200, n_shared=5)


def _kind(mods):
    return "paired" if len(mods) == 2 else next(iter(mods))


def score(name, batches, labels, res, seed, seconds, truth=None, control=None):
    """One result row of a mosaic fit (and its unpaired control)."""
    ari = fastjmt.adjusted_rand_index
    lab = res.labels
    order = res.batches
    y = np.concatenate([labels[k] for k in order])
    row = dict(design=name, seed=seed, pooled=round(ari(y, np.concatenate([lab[k] for k in order])), 4))
    for m in ("rna", "atac"):
        ks = [k for k in order if m in batches[k]]
        row["ari_" + m] = round(ari(np.concatenate([labels[k] for k in ks]), np.concatenate([lab[k] for k in ks])), 4)
    row["per_batch"] = " ".join(f"{k}:{ari(labels[k], lab[k]):.3f}" for k in order)
    atac_only = [k for k in order if _kind(batches[k]) == "atac"]
    row["ari_atac_only"] = round(ari(np.concatenate([labels[k] for k in atac_only]),
                                     np.concatenate([lab[k] for k in atac_only])), 4) if atac_only else None
    leak, col = [], res.n_shared
    for k, n in res.private.items():
        cols = np.arange(col, col + n)
        col += n
        others = np.concatenate([np.isin(res.columns[o], cols) for o in order if o != k])
        leak.append(float(others.mean()))
    row["others_in_private"] = round(100 * max(leak), 2) if leak else None
    row["n_clusters"] = len(set(res.column_clusters)) if res.column_clusters is not None else res.K
    if truth is not None:
        for key, pred in (("genes", res.labels_genes), ("regions", res.labels_regions)):
            t = truth[key]
            row["ari_" + key] = round(ari(t[t >= 0], pred[t >= 0]), 4)
    else:
        row["ari_genes"] = row["ari_regions"] = None
    row["n_iter"], row["fit_seconds"] = res.n_iter, round(seconds, 2)
    rna_only = [k for k in order if _kind(batches[k]) == "rna"]
    row["ari_rna_only"] = round(ari(np.concatenate([labels[k] for k in rna_only]),
                                    np.concatenate([lab[k] for k in rna_only])), 4) if rna_only else None
    row["unpaired_rna_only"], row["unpaired_atac_only"] = control if control is not None else (None, None)
    row["gain_atac"] = None
    if row["unpaired_atac_only"] is not None and row["ari_atac_only"] is not None:
        row["gain_atac"] = round(row["ari_atac_only"] - row["unpaired_atac_only"], 4)
    return row


def unpaired_control(batches, labels, ga, n_shared, private, seed):
    """ARI of the RNA-only and of the ATAC-only cells in the two-matrix fit of the RNA-only against the
    ATAC-only batches (same defaults)."""
    rna_k = [k for k in batches if _kind(batches[k]) == "rna"]
    atac_k = [k for k in batches if _kind(batches[k]) == "atac"]
    if not rna_k or not atac_k:
        return None, None
    G = sp.vstack([batches[k]["rna"] for k in rna_k], format="csr")
    R = sp.vstack([batches[k]["atac"] for k in atac_k], format="csr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = fastjmt.fit(G, R, ga, n_shared=n_shared, n_rna_only=sum(private.get(k, 0) for k in rna_k),
                        n_atac_only=sum(private.get(k, 0) for k in atac_k), random_state=seed)
    ya = np.concatenate([labels[k] for k in atac_k])
    yr = np.concatenate([labels[k] for k in rna_k])
    return (round(fastjmt.adjusted_rand_index(yr, u.labels_rna), 4),
            round(fastjmt.adjusted_rand_index(ya, u.labels_atac), 4))


def read_mosaic_folder(path):
    """The batches, labels and gene activity of a folder in the layout of ``snare_mouse_cortex_mosaic``."""
    def load(f):
        return sp.load_npz(os.path.join(path, f))

    def labels(b):
        return np.loadtxt(os.path.join(path, f"{b}_labels.txt"), dtype=str, delimiter="\t")

    batches = {"paired": {"rna": load("paired_rna.npz"), "atac": load("paired_atac.npz")},
               "rna_only": {"rna": load("rna_only_rna.npz")}, "atac_only": {"atac": load("atac_only_atac.npz")}}
    y = {b: labels(b) for b in batches}
    return batches, y, load("gene_activity.npz")


def quality(a):
    rows = []
    seeds = [int(s) for s in a.seeds.split(",")]
    sources = []
    if a.folders:
        for p in a.folders:
            batches, y, ga = read_mosaic_folder(p)
            n_shared = len(set(np.concatenate(list(y.values()))))
            sources.append((os.path.basename(os.path.normpath(p)), batches, y, ga, n_shared, {}, None))
    else:
        for name, kw in DESIGNS.items():
            d = fastjmt.simulate_mosaic(**{**SIZE, **kw}, random_state=0)
            sources.append((name, d.batches, d.labels, d.gene_activity, d.n_shared, d.private,
                            dict(genes=d.gene_programs, regions=d.region_programs)))
    for name, batches, y, ga, n_shared, private, truth in sources:
        for seed in seeds:
            t = time.perf_counter()
            res = fastjmt.fit_mosaic(batches, ga, n_shared=n_shared, private=private, random_state=seed)
            secs = time.perf_counter() - t
            control = unpaired_control(batches, y, ga, n_shared, private, seed)
            row = score(name, batches, y, res, seed, secs, truth, control)
            rows.append(row)
            print(row, flush=True)
    keys = list(rows[0])
    if len(seeds) > 1:
        print("\nmeans over seeds:")
        for name in dict.fromkeys(r["design"] for r in rows):
            rs = [r for r in rows if r["design"] == name]
            print(name, {k: round(float(np.mean([r[k] for r in rs])), 4) for k in keys
                         if isinstance(rs[0][k], (int, float)) and k not in ("seed",) and rs[0][k] is not None})
    if a.markdown:
        command = "python benchmarks/mosaic.py " + " ".join(sys.argv[1:])
        with open(a.markdown, "w") as f:
            f.write(f"<!-- generated by: {command} -->\n\n" + "\n".join(markdown_table(rows, keys)) + "\n")
    return rows


def cost(a):
    from fastjmt import driver
    from fastjmt._threads import fit_threads, resolve_n_threads
    from fastjmt.mosaic import _prepare
    from fastjmt.options import FitOptions, check_options
    from fastjmt.products import spmm, spmm_t_full

    d = fastjmt.simulate_mosaic(n_cells=a.cells, n_genes=2000, n_regions=20000, n_shared=10, random_state=0,
                                sampling="sparse")
    opts = check_options(FitOptions(n_shared=10))
    prep = _prepare(d.batches, d.gene_activity, 10, {}, 10, opts)
    mosaic = prep.mosaic
    from fastjmt.initialize import initialize_mosaic

    mp = initialize_mosaic(mosaic, prep.matrices, prep.A, 10, {}, "random", np.random.default_rng(0), 2.0,
                           opts.weights)
    sched = driver.Schedule()
    step = driver._Stepper(sched, mp)
    rng = np.random.default_rng(1)
    threads = resolve_n_threads(None)

    def epoch():
        driver.block_epoch(mosaic, mp, sched, step, rng, 1)

    def products():
        for b in mosaic.blocks:
            feat, cells = mp.features[b.modality], mp.cells[b.batch]
            spmm(b.data.X, np.arange(b.data.n, dtype=np.int64), np.ones(b.data.p, np.uint8), feat.Cf)
            spmm_t_full(b.data.X, b.data.Xt, b.data.p, cells.C)

    nnz = sum(b.data.X[2].size for b in mosaic.blocks)
    print(f"mosaic: {len(mosaic.blocks)} blocks, {nnz:.3g} nonzeros, K = 10, float32, {threads} threads")
    with fit_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epoch(), products()  # compile and warm up
        te, tp = [], []
        for _ in range(a.repeat):  # alternating
            t = time.perf_counter()
            epoch()
            te.append(time.perf_counter() - t)
            t = time.perf_counter()
            products()
            tp.append(time.perf_counter() - t)
    ratios = np.array(te) / np.array(tp)
    print(f"epoch {np.median(te) * 1e3:.1f} ms (range {min(te) * 1e3:.1f}–{max(te) * 1e3:.1f}), products "
          f"{np.median(tp) * 1e3:.1f} ms (range {min(tp) * 1e3:.1f}–{max(tp) * 1e3:.1f}); epoch / products: median "
          f"{np.median(ratios):.2f}, range {ratios.min():.2f}–{ratios.max():.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("folders", nargs="*")
    q.add_argument("--seeds", default="0")
    q.add_argument("--markdown")
    c = sub.add_parser("cost")
    c.add_argument("--cells", type=int, default=10000)
    c.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    return quality(a) if a.cmd == "quality" else cost(a)


if __name__ == "__main__":
    main()

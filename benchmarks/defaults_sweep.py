"""The measurement behind fastjmt's defaults: pooled ARI of several settings on several datasets.

Usage::

    python benchmarks/defaults_sweep.py                              # simulator only
    python benchmarks/defaults_sweep.py --shared ../shared/data      # + the shared folders

Each row is one setting (changes from the defaults); each column one dataset,
with ``RNA/ATAC/pooled`` ARI of the argmax clusters and the epochs run. The
table in docs/model.md was produced by this script.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import fastjmt

SETTINGS = [
    ("defaults", {}),
    ("initial point only (max_iter=1, lr 1e-9)", dict(max_iter=1, learning_rate=1e-9)),
    ("no entropy term (a6=0)", dict(a6=0.0)),
    ("weak entropy (a6=1)", dict(a6=1.0)),
    ("authors' cosine weights (a3=a4=100), a6=0", dict(a3=100.0, a4=100.0, a6=0.0)),
    ("authors' cosine weights (a3=a4=100)", dict(a3=100.0, a4=100.0)),
    ("learning_rate=0.01, a6=0", dict(learning_rate=0.01, a6=0.0)),
    ("random init (the paper's), a6=0", dict(init="random", a6=0.0)),
    ("random init (the paper's)", dict(init="random")),
]


def datasets(shared):
    out = []
    for name, layout in (("sim equal", dict(n_shared=5)), ("sim rna3/atac2", dict(n_shared=2, n_rna_only=1))):
        d = fastjmt.simulate(n_rna=800, n_atac=800, n_genes=400, n_regions=1200, separation=0.6, random_state=0,
                             **layout)
        out.append((name, d.rna, d.atac, d.gene_activity, d.rna_labels, d.atac_labels, layout))
    if shared:
        from evaluate import load_folder

        for folder, layout in (("sim_symsim_5clust_equal", dict(n_shared=5)),
                               ("sim_symsim_rna3_atac2", dict(n_shared=2, n_rna_only=1)),
                               ("sim_symsim_5clust_hard", dict(n_shared=5))):
            path = os.path.join(shared, folder)
            if os.path.isdir(path):
                out.append((folder.replace("sim_symsim_", "symsim "), *load_folder(path), layout))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=None, help="folder holding the shared datasets (optional)")
    a = ap.parse_args(argv)
    sets = datasets(a.shared)
    print("| setting | " + " | ".join(s[0] for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for label, kw in SETTINGS:
        cells = []
        for name, g, at, ga, ry, ay, layout in sets:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
                r = fastjmt.fit(g, at, ga, random_state=0, **layout, **kw)
            s = fastjmt.pooled_scores(r, ry, ay)
            cells.append(f"{s['ari_rna']:.2f}/{s['ari_atac']:.2f}/**{s['ari_pooled']:.2f}** "
                         f"({r.n_iter} ep, {time.perf_counter() - t0:.1f}s)")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

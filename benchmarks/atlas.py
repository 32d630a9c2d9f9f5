"""The atlas-scale run: 100,000 RNA cells × 20,000 genes and 100,000 ATAC cells × 100,000 regions, K = 20, float32.

Usage::

    python benchmarks/atlas.py make /tmp/atlas          # simulate once, save the CSR arrays (uncompressed)
    python benchmarks/atlas.py fit /tmp/atlas [--max-iter 60] [--low-memory]

``make`` runs the package's simulator (sparse sampling: ~2,000 nonzeros per RNA
cell, ~5,000 per ATAC cell, 20 shared types). ``fit`` loads the matrices in a
fresh process (so the simulator's memory does not count), fits, and prints
time, epochs, the peak resident memory against the inputs' CSR bytes, and the
ARI of the argmax clusters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings

import numpy as np
import scipy.sparse as sp


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make(folder, n_cells=100_000, seed=0):
    import fastjmt

    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    d = fastjmt.simulate(n_rna=n_cells, n_atac=n_cells, n_genes=20_000, n_regions=100_000, n_shared=20,
                         separation=0.6, rna_depth=10_000, atac_accessibility=0.03, sampling="sparse",
                         random_state=seed)
    for name, M in (("rna", d.rna), ("atac", d.atac), ("gene_activity", d.gene_activity)):
        sp.save_npz(os.path.join(folder, f"{name}.npz"), M, compressed=False)
    np.savetxt(os.path.join(folder, "rna_labels.txt"), d.rna_labels, fmt="%s")
    np.savetxt(os.path.join(folder, "atac_labels.txt"), d.atac_labels, fmt="%s")
    print(f"simulated in {time.perf_counter() - t0:.0f}s: RNA {d.rna.shape} nnz {d.rna.nnz} "
          f"({d.rna.nnz / n_cells:.0f}/cell), ATAC {d.atac.shape} nnz {d.atac.nnz} ({d.atac.nnz / n_cells:.0f}/cell)")


def fit(folder, max_iter, low_memory, n_threads):
    import fastjmt

    rna, atac, ga = (sp.load_npz(os.path.join(folder, f"{n}.npz")) for n in ("rna", "atac", "gene_activity"))
    ry = np.loadtxt(os.path.join(folder, "rna_labels.txt"), dtype=str)
    ay = np.loadtxt(os.path.join(folder, "atac_labels.txt"), dtype=str)
    in_bytes = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (rna, atac, ga))
    before = _peak_mb()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        res = fastjmt.fit(rna, atac, ga, n_shared=20, dtype=np.float32, max_iter=max_iter, tol=1e-4,
                          low_memory=low_memory, n_threads=n_threads, verbose=1)
    secs = time.perf_counter() - t0
    peak = _peak_mb()
    s = fastjmt.pooled_scores(res, ry, ay)
    out = dict(rna_shape=list(rna.shape), rna_nnz=int(rna.nnz), atac_shape=list(atac.shape), atac_nnz=int(atac.nnz),
               K=res.K, input_csr_mb=round(in_bytes / 2**20), peak_rss_mb=round(peak),
               peak_over_input=round(peak / (in_bytes / 2**20), 2), rss_after_load_mb=round(before),
               fit_seconds=round(secs, 1), epochs=res.n_iter, converged=res.converged,
               seconds_per_epoch_incl_init=round(secs / max(res.n_iter, 1), 2), low_memory=low_memory,
               stop_reason=res.stop_reason, n_clusters=res.n_clusters,
               ari_rna=round(s["ari_rna"], 3), ari_atac=round(s["ari_atac"], 3), ari_pooled=round(s["ari_pooled"], 3))
    print(json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("make", "fit"))
    ap.add_argument("folder")
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--max-iter", type=int, default=300, help="a cap: the fit stops by itself when converged")
    ap.add_argument("--low-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.what == "make":
        make(a.folder, a.cells)
    else:
        fit(a.folder, a.max_iter, a.low_memory, a.threads)


if __name__ == "__main__":
    main()

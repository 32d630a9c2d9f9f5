"""An atlas larger than memory, fitted out of core on Dask.

Usage::

    python benchmarks/atlas_dask.py make DIR [--cells 1000000] [--chunk 20000]
    python benchmarks/atlas_dask.py fit DIR [--max-iter 20] [--workers 2] [--chunk-rows 20000]

``make`` simulates RNA (cells × 20,000 genes, ~2,000 nonzeros per cell) and
ATAC (cells × 100,000 regions, ~5,000 per cell), 20 shared types, with the
package's simulator one chunk of cells at a time (``fastjmt.simulate(...,
cell_seed=i)``: the same types, new cells), appending each chunk to an
AnnData sparse element in a zarr store (``DIR/rna.zarr``, ``DIR/atac.zarr``,
group ``X``): never the whole matrix in memory. It checks the free disk first.

``fit`` opens both stores lazily (``anndata.experimental.read_elem_lazy``: a
Dask array of CSR row chunks), fits on a ``LocalCluster`` with ``--workers``
single-threaded worker processes, and prints: seconds per epoch (median and
range), nonzeros processed per second (two passes per epoch), the peak RSS of
the whole process tree (this process and the workers, sampled every 0.2 s),
the bytes the workers read, and the ARI of the labels against the simulator's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
import warnings

import numpy as np
import scipy.sparse as sp

GENES, REGIONS, TYPES = 20_000, 100_000, 20
SIM = dict(n_genes=GENES, n_regions=REGIONS, n_shared=TYPES, separation=0.6, rna_depth=10_000,
           atac_accessibility=0.03, sampling="sparse")
#: bytes per stored nonzero on disk, measured on a 20,000-cell chunk (zstd: values and int32 indices)
BYTES_PER_NNZ = 8.0


def make(folder, n_cells, chunk, seed=0):
    import zarr
    from anndata.io import sparse_dataset, write_elem

    import fastjmt

    need = n_cells * (2_000 + 5_000) * BYTES_PER_NNZ
    os.makedirs(folder, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free - 5e9:
        raise SystemExit(f"{n_cells} cells per modality need about {need / 1e9:.0f} GB; {free / 1e9:.0f} GB free: "
                         "pass a smaller --cells")
    t0 = time.perf_counter()
    stores = {m: zarr.open_group(os.path.join(folder, f"{m}.zarr"), mode="w") for m in ("rna", "atac")}
    labels = {"rna": [], "atac": []}
    nnz = {"rna": 0, "atac": 0}
    for i, a in enumerate(range(0, n_cells, chunk)):
        n = min(chunk, n_cells - a)
        d = fastjmt.simulate(n_rna=n, n_atac=n, random_state=seed, cell_seed=i, **SIM)
        if i == 0:
            sp.save_npz(os.path.join(folder, "gene_activity.npz"), d.gene_activity)
        for m, X in (("rna", d.rna), ("atac", d.atac)):
            X = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)), shape=X.shape)
            if i == 0:
                write_elem(stores[m], "X", X)
            else:
                sparse_dataset(stores[m]["X"]).append(X)
            nnz[m] += X.nnz
        labels["rna"].append(d.rna_labels)
        labels["atac"].append(d.atac_labels)
        print(f"chunk {i}: {a + n} cells per modality, {time.perf_counter() - t0:.0f}s", flush=True)
    for m in ("rna", "atac"):
        np.savetxt(os.path.join(folder, f"{m}_labels.txt"), np.concatenate(labels[m]), fmt="%s")
    on_disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
    print(json.dumps({"cells_per_modality": n_cells, "rna_nnz": nnz["rna"], "atac_nnz": nnz["atac"],
                      "csr_gb": round((nnz["rna"] + nnz["atac"]) * 12 / 1e9, 1), "on_disk_gb": round(on_disk / 1e9, 1),
                      "seconds": round(time.perf_counter() - t0)}))


class TreeMemory:
    """Peak RSS of this process and all its children, sampled in a thread."""

    def __init__(self, every=0.2):
        import psutil

        self.proc, self.every, self.peak, self.stop = psutil.Process(), every, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            total = 0
            for p in [self.proc] + self.proc.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except Exception:  # a process that just ended
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _children_read_bytes():
    import psutil

    total = 0
    for p in psutil.Process().children(recursive=True):
        try:
            total += p.io_counters().read_bytes
        except Exception:
            pass
    return total


def fit(folder, max_iter, workers, chunk_rows, persist=False):
    import zarr
    from anndata.experimental import read_elem_lazy
    from distributed import Client, LocalCluster

    import fastjmt
    from fastjmt.metrics import adjusted_rand_index

    X = {m: read_elem_lazy(zarr.open_group(os.path.join(folder, f"{m}.zarr"), mode="r")["X"],
                           chunks=(chunk_rows, GENES if m == "rna" else REGIONS)) for m in ("rna", "atac")}
    ga = sp.load_npz(os.path.join(folder, "gene_activity.npz"))
    ry = np.loadtxt(os.path.join(folder, "rna_labels.txt"), dtype=str)
    ay = np.loadtxt(os.path.join(folder, "atac_labels.txt"), dtype=str)
    nnz = {m: int(zarr.open_group(os.path.join(folder, f"{m}.zarr"), mode="r")["X"]["indptr"][-1]) for m in X}
    stamps = []

    def tick(it, terms, params):
        stamps.append(time.perf_counter())

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(cluster) as client, TreeMemory() as mem:
        read0 = _children_read_bytes()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
            res = fastjmt.fit(X["rna"], X["atac"], ga, n_shared=TYPES, max_iter=max_iter, client=client,
                              persist=persist, callback=tick, verbose=1)
            labels = (np.asarray(res.labels_rna), np.asarray(res.labels_atac))
        secs = time.perf_counter() - t0
        read = _children_read_bytes() - read0
    cluster.close()
    epochs = np.diff(stamps)
    s = adjusted_rand_index(ry, labels[0]), adjusted_rand_index(ay, labels[1])
    pooled = adjusted_rand_index(np.r_[ry, ay], np.r_[labels[0], labels[1]])
    per_epoch = float(np.median(epochs)) if epochs.size else float("nan")
    print(json.dumps({
        "cells": [int(X["rna"].shape[0]), int(X["atac"].shape[0])], "nnz": nnz, "chunk_rows": chunk_rows,
        "workers": workers, "persist": persist, "fit_seconds": round(secs), "epochs": res.n_iter,
        "seconds_per_epoch_median": round(per_epoch, 1),
        "seconds_per_epoch_range": [round(float(e), 1) for e in (epochs.min(), epochs.max())] if epochs.size else [],
        "start_seconds": round(stamps[0] - t0 - per_epoch) if stamps else None,
        "nnz_per_second": round(2 * sum(nnz.values()) / per_epoch) if epochs.size else None,
        "peak_rss_tree_gb": round(mem.peak / 1e9, 2), "worker_read_gb": round(read / 1e9, 1),
        "ari_rna": round(s[0], 3), "ari_atac": round(s[1], 3), "ari_pooled": round(pooled, 3),
        "stop_reason": res.stop_reason}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("make", "fit"))
    ap.add_argument("folder")
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells per modality (make)")
    ap.add_argument("--chunk", type=int, default=20_000, help="cells simulated and appended at a time (make)")
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=20_000, help="rows per Dask chunk (fit)")
    ap.add_argument("--persist", action="store_true", help="keep the prepared chunks in the workers' memory")
    a = ap.parse_args(argv)
    if a.what == "make":
        make(a.folder, a.cells, a.chunk)
    else:
        fit(a.folder, a.max_iter, a.workers, a.chunk_rows, a.persist)


if __name__ == "__main__":
    main()

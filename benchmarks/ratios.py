"""Ratios that matter, measured in one process on the same data (no absolute-time targets in tests).

Usage::

    python benchmarks/ratios.py [--cells 20000] [--repeat 5]

Prints, each as the best of ``--repeat`` runs:

1. every CSR kernel against scipy's (single-threaded) sparse × dense product,
   for K = 8, 16, 32 and float32/float64: ``X V`` (``spmm_rows``), ``Xᵀ U``
   from the transposed copy (``spmm_rows`` on the CSR of Xᵀ) and ``Xᵀ U`` by
   scattering (``spmm_t_rows``, the ``low_memory`` path);
2. one full-batch epoch against the sum of the four sparse products it needs
   (``X V`` and ``Xᵀ U`` for each modality), both run as inside ``fastjmt.fit``
   (``fit_threads``: the Numba thread count, BLAS limited to one thread);
3. all threads against one thread, for the kernels and the epoch.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numba
import numpy as np

import fastjmt
from fastjmt import kernels as kn
from fastjmt.problem import build_problem
from fastjmt._threads import fit_threads
from fastjmt.driver import Schedule, _epoch, _Stepper
from fastjmt.initialize import initialize
from fastjmt.products import column_block, kernel_mask, spmm, spmm_t_full
from fastjmt import preprocess as pp


def best(f, repeat):
    f()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def kernels(X, K, dtype, repeat, threads):
    rng = np.random.default_rng(0)
    X = X.astype(dtype)
    Xt = X.T.tocsr()
    n, p = X.shape
    V = rng.random((p, K)).astype(dtype)
    U = rng.random((n, K)).astype(dtype)
    rows, cols = np.arange(n, dtype=np.int64), np.arange(p, dtype=np.int64)
    cm, rm = kernel_mask(np.ones(p, np.uint8)), kernel_mask(np.ones(n, np.uint8))  # every column, as in a full batch
    o1, o2 = np.empty((n, K), dtype), np.empty((p, K), dtype)
    item = np.dtype(dtype).itemsize  # the column blocks a fit uses
    bp, bn = column_block(X.indptr, p, K, item), column_block(Xt.indptr, n, K, item)
    out = {}
    for nt in sorted({1, threads}):
        numba.set_num_threads(nt)
        out[("XV", nt)] = best(lambda: kn.spmm_rows(X.indptr, X.indices, X.data, rows, cm, V, o1, 4 * nt, bp),
                               repeat)
        out[("XtU copy", nt)] = best(
            lambda: kn.spmm_rows(Xt.indptr, Xt.indices, Xt.data, cols, rm, U, o2, 4 * nt, bn), repeat)
        out[("XtU scatter", nt)] = best(lambda: kn.spmm_t_rows(X.indptr, X.indices, X.data, rows, cm, U, o2, nt, bp),
                                        repeat)
    numba.set_num_threads(threads)
    out[("XV", "scipy")] = best(lambda: X @ V, repeat)
    out[("XtU copy", "scipy")] = out[("XtU scatter", "scipy")] = best(lambda: X.T @ U, repeat)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    threads = numba.config.NUMBA_NUM_THREADS
    d = fastjmt.simulate(n_rna=a.cells, n_atac=a.cells, n_genes=10_000, n_regions=50_000, n_shared=10,
                         rna_depth=8000, atac_accessibility=0.03, sampling="sparse", random_state=0)
    print(f"data: RNA {d.rna.shape} nnz {d.rna.nnz}, ATAC {d.atac.shape} nnz {d.atac.nnz}; {threads} threads")
    G = pp.preprocess_rna(pp.to_csr(d.rna, np.float64))

    print("\n1. CSR kernels vs scipy (single-threaded), on the ATAC matrix; ratio = scipy time / fastjmt time")
    print(f"{'product':<12} {'dtype':<8} {'K':>3} {'scipy ms':>9} {'1 thr ms':>9} {'all ms':>8} {'vs scipy':>9} "
          f"{'threads x':>9}")
    for dtype in (np.float32, np.float64):
        for K in (8, 16, 32):
            r = kernels(d.atac, K, dtype, a.repeat, threads)
            for name in ("XV", "XtU copy", "XtU scatter"):
                sc, one, many = r[(name, "scipy")], r[(name, 1)], r[(name, threads)]
                print(f"{name:<12} {np.dtype(dtype).name:<8} {K:>3} {sc * 1e3:9.1f} {one * 1e3:9.1f} "
                      f"{many * 1e3:8.1f} {sc / many:9.2f} {one / many:9.2f}")

    print("\n2./3. one full-batch epoch (K = 10, float32) vs the four sparse products it needs")
    w = dict(fastjmt.DEFAULT_WEIGHTS)
    R = pp.preprocess_atac(pp.to_csr(d.atac, np.float32))
    A = pp.preprocess_gene_activity(pp.to_csr(d.gene_activity, np.float32))
    for low_memory in (False, True):
        prob = build_problem(G.astype(np.float32), R, A, 10, 0, 0, w, np.float32, low_memory)
        sched = Schedule()
        params = initialize(prob, 10, 0, 0, "random", np.random.default_rng(0))
        step = _Stepper(sched, params)
        rng = np.random.default_rng(1)
        res = {}
        for nt in sorted({1, threads}):
            # as inside fastjmt.fit: nt Numba threads and BLAS limited to one thread
            with fit_threads(nt), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_epoch = best(lambda: _epoch(prob, params, sched, step, rng, 1), a.repeat)
                t_products = 0.0
                for name in ("atac", "rna"):
                    mod, f = prob.modality(name), params[name]
                    rows, cm = np.arange(mod.n, dtype=np.int64), np.ones(mod.p, np.uint8)
                    t_products += best(lambda: spmm(mod.X, rows, cm, f.Cf), a.repeat)
                    t_products += best(lambda: spmm_t_full(mod.X, mod.Xt, mod.p, f.C), a.repeat)
            res[nt] = (t_epoch, t_products)
        for nt, (te, tp) in res.items():
            print(f"low_memory={low_memory!s:<5} threads={nt}: epoch {te * 1e3:.1f} ms, sparse products "
                  f"{tp * 1e3:.1f} ms, epoch / products = {te / tp:.2f}")
        if len(res) == 2:
            speedup = res[1][0] / res[threads][0]
            print(f"low_memory={low_memory!s:<5} epoch speed-up {threads} threads vs 1: {speedup:.2f}")


if __name__ == "__main__":
    main()

"""Peak memory of a fit on large random CSR inputs, against the size of one dense array of the same shape.

Usage::

    python benchmarks/memory_scale.py                       # 50,000 × 200,000, 2e7 nonzeros per modality
    python benchmarks/memory_scale.py --cells 5000 --features 20000 --nnz 2000000 --iters 3

Builds random CSR matrices (float32 values, int32 indices) for RNA and ATAC
and a sparse gene activity matrix, runs ``fastjmt.fit`` for a few epochs and
prints: the bytes of the inputs, the peak resident memory of the process
(``ru_maxrss``, which includes the inputs, Python, NumPy, SciPy and Numba),
the peak added by the fit itself, and the size a dense float32 cells ×
features array would have.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np
import scipy.sparse as sp


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def random_csr(n, p, nnz, rng, binary, chunk=2000):
    """A random CSR with about ``nnz`` nonzeros, built in row chunks (no dense or cells × nnz temporaries)."""
    per_row = max(1, nnz // n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    parts = []
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        cols = np.sort(rng.integers(0, p, size=(b - a, per_row), dtype=np.int32), axis=1)
        keep = np.ones(cols.shape, dtype=bool)
        keep[:, 1:] = cols[:, 1:] != cols[:, :-1]
        indptr[a + 1:b + 1] = indptr[a] + np.cumsum(keep.sum(axis=1))
        parts.append(cols[keep])
    indices = np.concatenate(parts)
    data = np.ones(indices.size, np.float32) if binary else rng.integers(1, 20, size=indices.size).astype(np.float32)
    return sp.csr_matrix((data, indices, indptr.astype(np.int32)), shape=(n, p))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=200_000)
    ap.add_argument("--nnz", type=int, default=20_000_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--init", default="spectral")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    base = _rss_mb()
    t0 = time.perf_counter()
    rna = random_csr(a.cells, a.features, a.nnz, rng, binary=False)
    atac = random_csr(a.cells, a.features, a.nnz, rng, binary=True)
    ga = random_csr(a.features, a.features, 2 * a.features, rng, binary=True)
    gen_s = time.perf_counter() - t0
    in_bytes = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (rna, atac, ga))
    before_fit = _current_rss_mb()
    peak_before = _rss_mb()
    import fastjmt

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        res = fastjmt.fit(rna, atac, ga, n_shared=a.k, max_iter=a.iters, init=a.init, dtype=np.float32)
    fit_s = time.perf_counter() - t0
    peak = _rss_mb()
    dense_gb = a.cells * a.features * 4 / 1e9
    print(f"inputs: RNA {rna.shape} nnz {rna.nnz}, ATAC {atac.shape} nnz {atac.nnz}, gene activity nnz {ga.nnz}; "
          f"built in {gen_s:.1f}s")
    print(f"input CSR bytes: {in_bytes / 1e6:.0f} MB")
    print(f"process RSS before the inputs: {base:.0f} MB; RSS holding the inputs, before fit: {before_fit:.0f} MB "
          f"(peak while building them: {peak_before:.0f} MB)")
    if peak > peak_before:
        print(f"peak RSS during the fit: {peak:.0f} MB ({peak / 1024:.2f} GB); added by the fit: "
              f"{peak - before_fit:.0f} MB = {(peak - before_fit) / (in_bytes / 2**20):.2f}x the input CSR bytes")
    else:
        print(f"the fit's peak stayed below the input-building peak ({peak_before:.0f} MB)")
    print(f"one dense float32 {a.cells} x {a.features} array: {dense_gb:.1f} GB")
    print(f"fit: {res.n_iter} epochs in {fit_s:.1f}s ({fit_s / max(res.n_iter, 1):.2f}s per epoch incl. init and "
          f"compilation), loss {res.loss:.6g}")


if __name__ == "__main__":
    main()

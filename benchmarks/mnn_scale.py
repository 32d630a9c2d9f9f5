"""Time and peak memory of fastjmt.mnn_correct as the number of cells grows (sub-quadratic check).

Usage::

    python benchmarks/mnn_scale.py                 # n = 10^4, 3·10^4, 10^5 cells per modality, K = 20
    python benchmarks/mnn_scale.py --sizes 1000 10000 --K 10

Cell factors are drawn as soft memberships around K types (rows on the simplex, like
``JMTResult.C_*``). Prints seconds, the growth exponent between consecutive sizes
(2 would be quadratic), and the process's peak RSS; up to ``--compare-max`` cells it
also runs the exact search and prints how far the forest's result is from it.
"""

import argparse
import resource
import time

import numpy as np

import fastjmt


def factors(rng, n, K):
    lab = rng.integers(0, K, n)
    logits = rng.normal(0, 1, (n, K))
    logits[np.arange(n), lab] += 4
    C = np.exp(logits - logits.max(1, keepdims=True))
    return (C / C.sum(1, keepdims=True)).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    ap.add_argument("--K", type=int, default=20)
    ap.add_argument("--n-neighbors", type=int, default=20)
    ap.add_argument("--exact", action="store_true", help="force the exact (KD-tree) search")
    ap.add_argument("--compare-max", type=int, default=30_000, help="compare with the exact search up to this n")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    warm = factors(rng, 300, a.K), factors(rng, 300, a.K)
    fastjmt.mnn_correct(*warm, exact=True)  # compile / load the kernels of both searches
    fastjmt.mnn_correct(*warm, exact=False)
    prev = None
    for n in a.sizes:
        Ca, Cr = factors(rng, n, a.K), factors(rng, n, a.K)
        t = time.perf_counter()
        _, n_mutual = fastjmt.mnn_correct(Ca, Cr, n_neighbors=a.n_neighbors, exact=True if a.exact else None)
        secs = time.perf_counter() - t
        growth = "" if prev is None else f"  exponent {np.log(secs / prev[1]) / np.log(n / prev[0]):.2f}"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"n = {n:>8} per modality, K = {a.K}: {secs:7.2f} s, {np.mean(n_mutual > 0):.0%} with a mutual "
              f"neighbour, peak RSS {rss:.2f} GB{growth}", flush=True)
        prev = (n, secs)
        if n <= a.compare_max:
            t = time.perf_counter()
            exact, _ = fastjmt.mnn_correct(Ca, Cr, n_neighbors=a.n_neighbors, exact=True)
            approx, _ = fastjmt.mnn_correct(Ca, Cr, n_neighbors=a.n_neighbors, exact=False)
            same = np.mean(exact.argmax(1) == approx.argmax(1))
            print(f"    exact search {time.perf_counter() - t:.2f} s (both); forest vs exact: max |diff| "
                  f"{np.abs(exact - approx).max():.3g}, same argmax for {same:.2%} of cells", flush=True)


if __name__ == "__main__":
    main()

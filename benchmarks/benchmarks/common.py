"""Shared set-up of the asv suites: benchmark profiles, simulated data, prepared problems.

The profile comes from the environment variable ``FASTJMT_BENCH_PROFILE``:

``fast``
    CI-sized: a few seconds per benchmark (the default).
``regular``
    10,000 cells per modality; the sizes the performance targets talk about.
``large``
    50,000 cells per modality, 10^7–10^8 nonzeros; minutes per fit.

Every suite builds its data in ``setup`` and makes one untimed warm-up call
there, so Numba compiles (or loads its cache) before any timed method runs.
"""

from __future__ import annotations

import os
import warnings

import numba
import numpy as np

import fastjmt
from fastjmt import preprocess as pp
from fastjmt.problem import build_problem

PROFILE = os.environ.get("FASTJMT_BENCH_PROFILE", "fast")

#: cells per modality, genes, regions, RNA depth, ATAC accessibility
SIZES = {
    "fast": dict(n_rna=2000, n_atac=2000, n_genes=1000, n_regions=4000, rna_depth=3000, atac_accessibility=0.05),
    "regular": dict(n_rna=10_000, n_atac=10_000, n_genes=5000, n_regions=30_000, rna_depth=6000,
                    atac_accessibility=0.04),
    "large": dict(n_rna=50_000, n_atac=50_000, n_genes=10_000, n_regions=100_000, rna_depth=8000,
                  atac_accessibility=0.03),
}[PROFILE]

#: all the threads Numba may use, and one
THREADS = sorted({1, numba.config.NUMBA_NUM_THREADS})

_DATA = {}


def data(n_shared=8, n_rna_only=0, separation=0.6, **extra):
    """Simulated data of the current profile (memoised within one benchmark process).

    ``extra`` goes to :func:`fastjmt.simulate` (e.g. ``atac_noise``, ``proportions`` as a tuple).
    """
    key = (n_shared, n_rna_only, separation, tuple(sorted(extra.items())))
    if key not in _DATA:
        _DATA[key] = fastjmt.simulate(n_shared=n_shared, n_rna_only=n_rna_only, separation=separation,
                                      sampling="sparse" if PROFILE == "large" else "auto", random_state=0,
                                      **SIZES, **extra)
    return _DATA[key]


def problem(K, dtype, low_memory=False):
    """A prepared :class:`fastjmt.objective.Problem` (preprocessed CSR arrays) with K columns, all shared."""
    d = data()
    G = pp.preprocess_rna(pp.to_csr(d.rna, dtype))
    R = pp.preprocess_atac(pp.to_csr(d.atac, dtype))
    A = pp.preprocess_gene_activity(pp.to_csr(d.gene_activity, dtype))
    return build_problem(G, R, A, K, 0, 0, dict(fastjmt.DEFAULT_WEIGHTS), dtype, low_memory)


def fit(d, **kw):
    """``fastjmt.fit`` on simulated data, ConvergenceWarning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=d.n_shared, n_rna_only=d.n_rna_only,
                           n_atac_only=d.n_atac_only, **kw)


def dense_right_factor(n_rows, K, dtype, seed=0):
    """A C-contiguous random n_rows × K factor."""
    return np.random.default_rng(seed).random((n_rows, K)).astype(dtype)

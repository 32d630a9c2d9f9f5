"""asv benchmarks: kernels, one epoch, whole fits, quality tracks.

JIT compilation happens in ``setup`` (a warm-up call), never in a timed method.
Run from ``benchmarks/``: ``asv run --python=same --quick`` (current
environment) or ``asv continuous main HEAD``.
"""

import warnings

import numpy as np

import fastjmt
from fastjmt import kernels as kn
from fastjmt.objective import work_chunks

SIZES = {"small": (2000, 1000, 3000), "medium": (10000, 2000, 10000)}


def _data(size, layout=None):
    n, g, r = SIZES[size]
    layout = layout or dict(n_shared=5)
    return fastjmt.simulate(n_rna=n, n_atac=n, n_genes=g, n_regions=r, separation=0.6, random_state=0, **layout)


def _fit(d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=d.n_shared, n_rna_only=d.n_rna_only,
                           n_atac_only=d.n_atac_only, **kw)


class SpMM:
    """The CSR × dense kernel against scipy's product, K columns, float32/float64."""

    params = ([8, 32], ["float32", "float64"])
    param_names = ["K", "dtype"]

    def setup(self, K, dtype):
        d = _data("medium")
        self.X = d.atac.astype(dtype)
        self.B = np.random.default_rng(0).random((self.X.shape[1], K)).astype(dtype)
        self.rows = np.arange(self.X.shape[0], dtype=np.int64)
        self.mask = np.ones(self.X.shape[1], np.uint8)
        self.out = np.empty((self.X.shape[0], K), dtype)
        self.time_fastjmt_spmm()  # compile

    def time_fastjmt_spmm(self, *_):
        X = self.X
        kn.spmm_rows(X.indptr, X.indices, X.data, self.rows, self.mask, self.B, self.out, work_chunks())

    def time_scipy_spmm(self, *_):
        self.X @ self.B


class Fit:
    """Whole fits (fixed epochs, so times compare) and their memory."""

    params = (["small", "medium"], ["float32", "float64"])
    param_names = ["size", "dtype"]
    timeout = 600

    def setup(self, size, dtype):
        self.d = _data(size)
        _fit(self.d, max_iter=2, dtype=dtype)  # compile

    def time_fit_50_epochs(self, size, dtype):
        _fit(self.d, max_iter=50, tol=0.0, dtype=dtype)

    def peakmem_fit_50_epochs(self, size, dtype):
        _fit(self.d, max_iter=50, tol=0.0, dtype=dtype)


class Quality:
    """Pooled ARI of default fits on the simulator (tracked so that a regression shows)."""

    params = (["equal", "rna3_atac2"],)
    param_names = ["scenario"]
    timeout = 600

    def setup(self, scenario):
        layout = dict(n_shared=5) if scenario == "equal" else dict(n_shared=2, n_rna_only=1)
        self.d = _data("small", layout)
        self.res = _fit(self.d, random_state=0)

    def track_ari_pooled(self, scenario):
        return fastjmt.pooled_scores(self.res, self.d.rna_labels, self.d.atac_labels)["ari_pooled"]

    def track_n_iter(self, scenario):
        return self.res.n_iter

    def track_final_loss(self, scenario):
        return self.res.loss

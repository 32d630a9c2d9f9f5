"""Fit fastjmt on datasets in the shared format (rna.npz, atac.npz, gene_activity.npz, *_labels.txt) and score it.

Usage::

    python benchmarks/evaluate.py ../shared/data/sim_symsim_5clust_equal --n-shared 5
    python benchmarks/evaluate.py ../shared/data/sim_symsim_rna3_atac2 --n-shared 2 --n-rna-only 1

Prints ARI/NMI per modality and pooled, the share of cells in columns their
modality should not have, epochs and wall time. Extra ``--set NAME=VALUE``
arguments are passed to :func:`fastjmt.fit` (numbers parsed as float/int).

``--trace`` also scores the argmax clusters after every epoch (through the
fit's ``callback``) and reports the best pooled ARI seen, the first epoch
that reached it and the seconds since the fit started (initialisation
included): the time to the best ARI, next to the epochs the fit ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import scipy.sparse as sp

import fastjmt


def load_folder(path):
    """The three matrices and the two label arrays of a dataset folder."""
    rna, atac, ga = (sp.load_npz(os.path.join(path, f)) for f in ("rna.npz", "atac.npz", "gene_activity.npz"))
    ry = np.loadtxt(os.path.join(path, "rna_labels.txt"), dtype=str, delimiter="\t")
    ay = np.loadtxt(os.path.join(path, "atac_labels.txt"), dtype=str, delimiter="\t")
    return rna, atac, ga, ry, ay


def wrong_column_shares(res):
    """Fraction of ATAC cells in RNA-only columns and of RNA cells in ATAC-only columns."""
    s, r = res.n_shared, res.n_rna_only
    la, lr = res.labels_atac, res.labels_rna
    atac_in_rna_only = float(np.mean((la >= s) & (la < s + r))) if r else 0.0
    rna_in_atac_only = float(np.mean(lr >= s + r)) if res.n_atac_only else 0.0
    return atac_in_rna_only, rna_in_atac_only


class ARITrace:
    """A fit callback that scores the argmax clusters after every epoch (of every restart)."""

    def __init__(self, rna_labels, atac_labels, t0):
        self.pooled_true = np.concatenate([np.asarray(rna_labels).astype(str), np.asarray(atac_labels).astype(str)])
        self.t0 = t0
        self.best = (-np.inf, 0, 0.0)  # ARI, epoch, seconds

    def __call__(self, it, terms, params):
        pred = np.concatenate([params["rna"].C.argmax(axis=1), params["atac"].C.argmax(axis=1)])
        ari = fastjmt.adjusted_rand_index(self.pooled_true, pred)
        if ari > self.best[0]:
            self.best = (ari, it, time.perf_counter() - self.t0)
        return False

    def summary(self):
        ari, it, secs = self.best
        return dict(best_ari_pooled=round(float(ari), 4), best_ari_epoch=it, seconds_to_best_ari=round(secs, 2))


def _parse(v):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--n-shared", type=int, required=True)
    ap.add_argument("--n-rna-only", type=int, default=0)
    ap.add_argument("--n-atac-only", type=int, default=0)
    ap.add_argument("--atac-file", default="atac.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="NAME=VALUE passed to fastjmt.fit")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--trace", action="store_true", help="score every epoch; report the time to the best ARI")
    a = ap.parse_args(argv)
    rna, _, ga, ry, ay = load_folder(a.folder)
    atac = sp.load_npz(os.path.join(a.folder, a.atac_file))
    kw = {k: _parse(v) for k, v in (s.split("=", 1) for s in a.set)}
    t0 = time.perf_counter()
    trace = ARITrace(ry, ay, t0) if a.trace else None
    kw_fit = dict(kw, callback=trace) if trace is not None else kw
    res = fastjmt.fit(rna, atac, ga, n_shared=a.n_shared, n_rna_only=a.n_rna_only, n_atac_only=a.n_atac_only,
                      random_state=a.seed, **kw_fit)
    secs = time.perf_counter() - t0
    scores = fastjmt.pooled_scores(res, ry, ay)
    a_in_r, r_in_a = wrong_column_shares(res)
    out = dict(dataset=os.path.basename(os.path.normpath(a.folder)), **{k: round(v, 4) for k, v in scores.items()},
               atac_in_rna_only=round(a_in_r, 4), rna_in_atac_only=round(r_in_a, 4), n_iter=res.n_iter,
               converged=res.converged, seconds=round(secs, 2), loss=res.loss, options=kw)
    if trace is not None:
        out.update(trace.summary())
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>18}: {v}")
    return out


if __name__ == "__main__":
    main()

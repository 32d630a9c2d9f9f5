"""When is a fit done? Per-epoch traces of the loss and of the answer, and candidate stopping rules.

Usage::

    python benchmarks/stopping.py ../shared/data/sim_symsim_5clust_equal [more folders] [--protocol] [--json F]

Every dataset (folders in the shared format; ``--protocol`` adds the 22
simulated datasets of ``protocol.py``) is fitted once for ``--epochs`` epochs
(default 300) with the stopping rule switched off, and a callback records after
every epoch: the total loss, the argmax labels of the cells (RNA, ATAC) and of
the features (genes, regions), S of both modalities and the pooled ARI of the
argmax cell labels against the true labels.

From the trace it then finds, for each candidate rule, the epoch at which that
rule would have stopped (see :func:`stop_epoch`; the same quantities the
driver's ``stop="answer"`` rule checks) and the pooled ARI there against the
ARI after all epochs. Printed: one row per dataset and rule.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np

import fastjmt
from fastjmt.metrics import adjusted_rand_index

from evaluate import load_folder
from protocol import SCENARIOS, SIZES, layout_from_labels


class Trace:
    """Fit callback: keeps the loss, labels of cells and features, S, and the pooled ARI of every epoch."""

    def __init__(self, rna_labels, atac_labels):
        self.true = np.concatenate([np.asarray(rna_labels).astype(str), np.asarray(atac_labels).astype(str)])
        self.loss, self.labels, self.S, self.ari, self.t = [], [], [], [], []
        self.t0 = time.perf_counter()

    def __call__(self, it, terms, params):
        self.loss.append(terms["total"])
        lab = [params[m].C.argmax(1).astype(np.int16) for m in ("rna", "atac")]
        lab += [params[m].Cf.argmax(1).astype(np.int16) for m in ("rna", "atac")]
        self.labels.append(lab)
        self.S.append([params[m].S.astype(np.float64).copy() for m in ("rna", "atac")])
        self.ari.append(adjusted_rand_index(self.true, np.concatenate(lab[:2])))
        self.t.append(time.perf_counter() - self.t0)
        return False

    def changes(self, t, w):
        """At epoch t (1-based), over the last w epochs: (max label-change share over the four groups,
        relative change of S (max over modalities), relative loss change per epoch)."""
        a, b = self.labels[t - 1], self.labels[t - 1 - w]
        lab = max(float(np.mean(x != y)) for x, y in zip(a, b))
        S = max(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-300)
                for x, y in zip(self.S[t - 1], self.S[t - 1 - w]))
        loss = abs(self.loss[t - 1 - w] - self.loss[t - 1]) / max(abs(self.loss[t - 1]), 1e-12) / w
        return lab, S, loss


def stop_epoch(tr: Trace, window, label_tol, s_tol, loss_tol, min_epochs=0):
    """The first epoch t (a multiple of ``window``, t >= 2 window) at which, over the last ``window``
    epochs, the label-change share <= label_tol, the relative S change <= s_tol and the per-epoch
    relative loss change <= loss_tol; None if never."""
    for t in range(2 * window, len(tr.loss) + 1, window):
        if t < min_epochs:
            continue
        lab, S, loss = tr.changes(t, window)
        if lab <= label_tol and S <= s_tol and loss <= loss_tol:
            return t
    return None


RULES = [
    # (name, window, label_tol, s_tol, loss_tol)
    ("w5 lab1e-3 S1e-2 loss1e-3", 5, 1e-3, 1e-2, 1e-3),
    ("w5 lab1e-3 S1e-2 loss1e-4", 5, 1e-3, 1e-2, 1e-4),
    ("w5 lab1e-3 S5e-3 loss1e-4", 5, 1e-3, 5e-3, 1e-4),
    ("w5 lab0 S1e-2 loss1e-4", 5, 0.0, 1e-2, 1e-4),
    ("w5 lab5e-3 S2e-2 loss5e-4", 5, 5e-3, 2e-2, 5e-4),
    ("w10 lab1e-3 S1e-2 loss1e-4", 10, 1e-3, 1e-2, 1e-4),
    ("w5 lab1e-3 S1e-3 loss1e-5", 5, 1e-3, 1e-3, 1e-5),
]


#: (label, fit options) of ``--settings``: real fits, each stopped by its own rule
SETTINGS = [
    ("loss rule, 300 cap, lr 0.1 (before)", dict(stop="loss", learning_rate=0.1)),
    ("answer, defaults", dict()),
    ("answer, lr 0.1", dict(learning_rate=0.1)),
    ("answer, no step decay", dict(step_decay=1.0)),
    ("answer, step decay 0.7", dict(step_decay=0.7)),
    ("answer, label_tol 0", dict(label_tol=0.0)),
    ("answer, window 3", dict(window=3)),
]


def run_settings(name, rna, atac, ga, ry, ay, settings, max_iter):
    """Fit one dataset with every setting; one result dict per setting."""
    layout = layout_from_labels(ry, ay)
    rows = []
    for label, kw in settings:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fastjmt.ConvergenceWarning)
            res = fastjmt.fit(rna, atac, ga, n_shared=layout[0], n_rna_only=layout[1], n_atac_only=layout[2],
                              random_state=0, max_iter=max_iter, **kw)
        s = fastjmt.integration_scores(ry, ay, res.labels_rna, res.labels_atac)
        rows.append(dict(dataset=name, setting=label, epochs=res.n_iter, converged=res.converged,
                         reason=res.stop_reason, warned=any(issubclass(w.category, fastjmt.ConvergenceWarning)
                                                            for w in caught),
                         ari_pooled=round(s["ari_pooled"], 4), ari_rna=round(s["ari_rna"], 4),
                         ari_atac=round(s["ari_atac"], 4), loss=float(f"{res.loss:.6g}"),
                         fit_seconds=round(res.fit_seconds, 2)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def datasets(folders, protocol, size):
    for p in folders:
        rna, atac, ga, ry, ay = load_folder(p)
        yield os.path.basename(os.path.normpath(p)), rna, atac, ga, ry, ay
    if protocol:
        for sc in sorted(SCENARIOS):
            for name, kw in SCENARIOS[sc]:
                d = fastjmt.simulate(**SIZES[size], **kw)
                yield name, d.rna, d.atac, d.gene_activity, d.rna_labels, d.atac_labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*")
    ap.add_argument("--protocol", action="store_true", help="also the protocol's simulated datasets")
    ap.add_argument("--quick", action="store_true", help="protocol datasets at the quick size")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--json", help="write the per-dataset trace summaries here")
    ap.add_argument("--settings", action="store_true",
                    help="instead of the trace: fit with every setting of SETTINGS, each stopped by its own rule")
    ap.add_argument("--only", type=int, nargs="*", help="indices of SETTINGS to run (default all)")
    a = ap.parse_args(argv)
    out = []
    if a.settings:
        chosen = [SETTINGS[i] for i in a.only] if a.only is not None else SETTINGS
        for name, rna, atac, ga, ry, ay in datasets(a.folders, a.protocol, "quick" if a.quick else "full"):
            out += run_settings(name, rna, atac, ga, ry, ay, chosen, a.epochs)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
        return out
    for name, rna, atac, ga, ry, ay in datasets(a.folders, a.protocol, "quick" if a.quick else "full"):
        layout = layout_from_labels(ry, ay)
        tr = Trace(ry, ay)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
            res = fastjmt.fit(rna, atac, ga, n_shared=layout[0], n_rna_only=layout[1], n_atac_only=layout[2],
                              max_iter=a.epochs, tol=0.0, stop="loss", callback=tr, random_state=0)
        n = len(tr.loss)
        row = dict(dataset=name, epochs=n, ari_final=round(tr.ari[-1], 4), seconds_final=round(tr.t[-1], 2),
                   rules={})
        for t in (5, 10, 20, 30, 40, 60, 100, 200, 300):
            if 2 * 5 <= t <= n:
                a_, b_ = tr.labels[t - 1], tr.labels[t - 6]
                groups = [round(float(np.mean(x != y)), 5) for x, y in zip(a_, b_)]
                lab, S, loss = tr.changes(t, 5)
                row[f"w5@{t}"] = [groups, round(S, 5), float(f"{loss:.3g}"), round(tr.ari[t - 1], 4)]
        for rname, w, lt, st, ot in RULES:
            t = stop_epoch(tr, w, lt, st, ot)
            row["rules"][rname] = None if t is None else [t, round(tr.ari[t - 1], 4), round(tr.t[t - 1], 2)]
        out.append(row)
        print(json.dumps(row), flush=True)
        del res
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()

"""Reference mapping: fit on 80 % of each modality's cells, map the other 20 % with ``JMT.transform``.

Usage::

    python benchmarks/transform.py ../shared/data/sim_symsim_5clust_equal ../shared/data/snare_mouse_cortex
    python benchmarks/transform.py --markdown docs/results/transform.md ../shared/data/*/

For each dataset folder (the shared format) and seed: a default fit on all
cells (the reference answer), a default fit on a random 80 % of each
modality's cells, and the transform of the held-out 20 %. Printed:

``agree_rna`` / ``agree_atac``
    share of held-out cells whose mapped cluster is their cluster in the fit
    on all cells. The two fits number their clusters differently: each
    cluster of the 80 % fit is matched to the all-cells cluster that most of
    its *training* cells are in, and only then are the held-out cells compared.
``agree_*_train``
    the same for the *training* cells of the 80 % fit: how far two fits of
    the same cells agree at all, the ceiling of ``agree_*``.
``ari_*_mapped`` / ``ari_*_full``
    ARI against the true labels of the held-out cells: mapped, and as
    clustered by the fit on all cells.
``rna_only_atac``
    share of held-out ATAC cells mapped to RNA-only columns (unequal layouts).
``transform_s / fit_s``
    seconds to map 10 % new cells (the first half of the held-out cells of
    each modality) against seconds of the 80 % fit, in the same process.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

import fastjmt
from evaluate import load_folder
from protocol import layout_from_labels


def _match(train_labels, full_labels):
    """Each cluster of one fit -> the cluster of the other fit most of its cells are in."""
    out = {}
    for k in np.unique(train_labels):
        vals, counts = np.unique(full_labels[train_labels == k], return_counts=True)
        out[int(k)] = int(vals[np.argmax(counts)])
    return out


def run(folder, seed):
    rna, atac, ga, ry, ay = load_folder(folder)
    ry, ay = np.asarray(ry).astype(str), np.asarray(ay).astype(str)
    ns, nr, na = layout_from_labels(ry, ay)
    kw = dict(n_shared=ns, n_rna_only=nr, n_atac_only=na, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = fastjmt.JMT(**kw).fit(rna, atac, ga)
        rng = np.random.default_rng(seed)
        train = {m: rng.permutation(n) < int(round(0.8 * n)) for m, n in (("rna", rna.shape[0]),
                                                                            ("atac", atac.shape[0]))}
        t0 = time.perf_counter()
        part = fastjmt.JMT(**kw).fit(rna[train["rna"]], atac[train["atac"]], ga)
        fit_s = time.perf_counter() - t0
        held = {"rna": np.flatnonzero(~train["rna"]), "atac": np.flatnonzero(~train["atac"])}
        mapped = part.transform(rna=rna[held["rna"]], atac=atac[held["atac"]])
        tenth = {m: held[m][: int(round(0.1 * n))] for m, n in (("rna", rna.shape[0]), ("atac", atac.shape[0]))}
        t0 = time.perf_counter()
        part.transform(rna=rna[tenth["rna"]], atac=atac[tenth["atac"]])
        transform_s = time.perf_counter() - t0
    full_labels = {"rna": full.labels_rna_, "atac": full.labels_atac_}
    part_labels = {"rna": part.labels_rna_, "atac": part.labels_atac_}
    match = _match(np.concatenate([part_labels["rna"], part_labels["atac"]]),
                   np.concatenate([full_labels["rna"][train["rna"]], full_labels["atac"][train["atac"]]]))
    row = dict(dataset=os.path.basename(os.path.normpath(folder)), seed=seed, layout=f"{ns}/{nr}/{na}")
    truth = {"rna": ry, "atac": ay}
    for m in ("rna", "atac"):
        got = np.array([match.get(int(k), -1) for k in mapped[m]["labels"]])
        row[f"agree_{m}"] = round(float(np.mean(got == full_labels[m][held[m]])), 4)
        fitted = np.array([match.get(int(k), -1) for k in part_labels[m]])
        row[f"agree_{m}_train"] = round(float(np.mean(fitted == full_labels[m][train[m]])), 4)
        row[f"ari_{m}_mapped"] = round(fastjmt.adjusted_rand_index(truth[m][held[m]], mapped[m]["labels"]), 4)
        row[f"ari_{m}_full"] = round(fastjmt.adjusted_rand_index(truth[m][held[m]], full_labels[m][held[m]]), 4)
    cols = mapped["atac"]["columns"]
    row["rna_only_atac"] = round(float(np.mean((cols >= ns) & (cols < ns + nr))), 4)
    row["transform_s"] = round(transform_s, 3)
    row["fit_s"] = round(fit_s, 2)
    row["transform/fit"] = round(transform_s / fit_s, 4)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (fits and the 80 %% draw)")
    ap.add_argument("--markdown", help="also write the table here")
    a = ap.parse_args(argv)
    rows = []
    for folder in a.folders:
        for seed in (int(s) for s in a.seeds.split(",")):
            rows.append(run(folder, seed))
            print(rows[-1], flush=True)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    print("\n".join(lines))
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

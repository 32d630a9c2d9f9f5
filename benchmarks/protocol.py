"""The paper's evaluation protocol, on the package's simulator and on dataset folders.

Usage::

    python benchmarks/protocol.py                                   # every simulated scenario
    python benchmarks/protocol.py --scenario 1 --scenario 2         # the paper's two scenarios only
    python benchmarks/protocol.py --quick                           # smaller cells/features (CI-sized)
    python benchmarks/protocol.py ../shared/data/*/                 # folders in the shared format, no simulation
    python benchmarks/protocol.py --markdown docs/quality_table.md ../shared/data/*/
    python benchmarks/protocol.py --mosaic ../shared/data/snare_mouse_cortex_mosaic   # mosaics (fit_mosaic)

Scenarios (the paper's section on simulated data, with the package's simulator):

``1``     six datasets, five clusters, equal compositions (seeds 0–5).
``2``     twelve datasets, RNA has three clusters and ATAC two, two shared (seeds 0–11).
``hard``  harder settings, one dataset each: weak separation (0.4), noisier ATAC (80 % of
          open regions moved at random), a rare cluster (5 % of the others' size, separation
          0.6), more clusters (ten, separation 0.6).

Every dataset is fitted with :func:`fastjmt.fit`'s defaults, once per seed (``--seeds 0,1,2,3,4``;
default ``0``); K and the layout come from the labels (types in both modalities are shared).
Each fit is then scored five ways, the same for every dataset:

``labels``    the default labels, ``res.labels_rna`` / ``res.labels_atac``: the argmax columns merged
              by :func:`fastjmt.merge_columns` (resolution 1).
``argmax``    the paper's clusters, the argmax of each cell's row of C (``res.columns_*``).
``mnn``       argmax after :func:`fastjmt.mnn_correct` (the paper's real-data post-processing).
``quantile``  argmax after :func:`fastjmt.quantile_normalize` (LIGER's step).
``leiden``    LIGER's recipe on fastjmt's program activities: ``programs_atac`` quantile-normalised
              onto ``programs_rna``, then Leiden communities (resolution 0.3, 15 neighbours) of the
              joint k-nearest-neighbour graph; not limited to K clusters. Skipped without igraph.

The resolution 0.3 was chosen once, on all four shared datasets together (0.3 and 1.0
measured; 1.0 over-splits every one of them), and is used unchanged everywhere.

Printed per dataset and labelling: ARI and NMI per modality and pooled, and the share of
ATAC cells in clusters of RNA-only types (and of RNA cells in ATAC-only ones), by
:func:`fastjmt.integration_scores`. On simulated data also the fit's own work on the
features: the ARI of the feature clusters (argmax of ``C_genes`` / ``C_regions``) against
the simulator's ground-truth programs (``ari_genes``, ``ari_regions``; features marked by
exactly one type). With several seeds, a second table gives the mean and range per dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

import fastjmt

from evaluate import load_folder

SIZES = {"full": dict(n_rna=2000, n_atac=2000, n_genes=1000, n_regions=3000),
         "quick": dict(n_rna=600, n_atac=600, n_genes=400, n_regions=1200)}

#: scenario -> list of (name, simulate keyword arguments)
SCENARIOS = {
    "1": [(f"s1_equal_seed{s}", dict(n_shared=5, random_state=s)) for s in range(6)],
    "2": [(f"s2_rna3_atac2_seed{s}", dict(n_shared=2, n_rna_only=1, random_state=s)) for s in range(12)],
    "hard": [
        ("hard_weak_separation", dict(n_shared=5, separation=0.4, random_state=0)),
        ("hard_noisy_atac", dict(n_shared=5, atac_noise=0.8, random_state=0)),
        ("hard_rare_cluster", dict(n_shared=5, separation=0.6, proportions=[1, 1, 1, 1, 0.05], random_state=0)),
        ("hard_ten_clusters", dict(n_shared=10, separation=0.6, random_state=0)),
    ],
}

LABELINGS = ("labels", "argmax", "mnn", "quantile", "leiden")
LEIDEN_RESOLUTION = 0.3


def layout_from_labels(rna_labels, atac_labels):
    """``(n_shared, n_rna_only, n_atac_only)``: types in both modalities, only in RNA, only in ATAC."""
    r, a = set(np.asarray(rna_labels).astype(str)), set(np.asarray(atac_labels).astype(str))
    return len(r & a), len(r - a), len(a - r)


def _has_igraph():
    try:
        import igraph  # noqa: F401
    except ImportError:
        return False
    return True


def labelings(res, keep=LABELINGS):
    """The labellings of one fit named in ``keep`` (``leiden`` only with igraph): name -> (labels_rna, labels_atac)."""
    out = {}
    if "labels" in keep:
        out["labels"] = (res.labels_rna, res.labels_atac)
    if "argmax" in keep:
        out["argmax"] = fastjmt.cluster_cells(res.C_rna, res.C_atac)
    if "mnn" in keep:
        C_atac_mnn, _ = fastjmt.mnn_correct(res.C_atac, res.C_rna)
        out["mnn"] = fastjmt.cluster_cells(res.C_rna, C_atac_mnn)
    if "quantile" in keep:
        out["quantile"] = fastjmt.cluster_cells(*fastjmt.quantile_normalize(res.C_rna, res.C_atac))
    if "leiden" in keep and _has_igraph():
        P_rna, P_atac = fastjmt.quantile_normalize(res.programs_rna, res.programs_atac)
        out["leiden"] = fastjmt.cluster_cells(P_rna, P_atac, method="leiden", resolution=LEIDEN_RESOLUTION)
    return out


def feature_scores(res, truth):
    """ARI of the fit's feature clusters against ground-truth programs (features marked by one type only)."""
    out = {}
    for key, pred in (("genes", res.labels_genes), ("regions", res.labels_regions)):
        t = None if truth is None else truth.get(key)
        out["ari_" + key] = None if t is None else round(fastjmt.adjusted_rand_index(t[t >= 0], pred[t >= 0]), 4)
    return out


def evaluate(name, rna, atac, ga, rna_labels, atac_labels, fit_kwargs, truth=None, keep=LABELINGS):
    """Fit one dataset and score every labelling: a list of result rows (dicts)."""
    layout = layout_from_labels(rna_labels, atac_labels)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        res = fastjmt.fit(rna, atac, ga, n_shared=layout[0], n_rna_only=layout[1], n_atac_only=layout[2],
                          **fit_kwargs)
    fit_s = time.perf_counter() - t0
    feats = feature_scores(res, truth)
    rows = []
    for method, (lr, la) in labelings(res, keep).items():
        s = fastjmt.integration_scores(rna_labels, atac_labels, lr, la)
        rows.append(dict(dataset=name, labels=method, layout="/".join(map(str, layout)),
                         seed=fit_kwargs.get("random_state", 0), n_iter=res.n_iter, fit_seconds=round(fit_s, 2),
                         **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}, **feats))
    return rows


def simulated(scenarios, size):
    for sc in scenarios:
        for name, kw in SCENARIOS[sc]:
            d = fastjmt.simulate(**SIZES[size], **kw)
            yield name, d.rna, d.atac, d.gene_activity, d.rna_labels, d.atac_labels, \
                dict(genes=d.gene_programs, regions=d.region_programs)


def folders(paths):
    for p in paths:
        rna, atac, ga, ry, ay = load_folder(p)
        yield os.path.basename(os.path.normpath(p)), rna, atac, ga, ry, ay, None


COLUMNS = ("dataset", "labels", "layout", "seed", "ari_pooled", "ari_rna", "ari_atac", "nmi_pooled", "nmi_rna",
           "nmi_atac", "atac_in_rna_only", "rna_in_atac_only", "n_clusters", "ari_genes", "ari_regions", "n_iter",
           "fit_seconds")
SEED_COLUMNS = ("dataset", "labels", "n_seeds", "ari_pooled", "ari_pooled_range", "ari_rna", "ari_atac",
                "atac_in_rna_only", "n_clusters", "ari_genes", "ari_regions", "n_iter", "fit_seconds")


def seed_summary(rows):
    """Per (dataset, labelling) over seeds: means, and the pooled ARI's range (only with several seeds)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["labels"]), []).append(r)
    out = []
    for (ds, lab), rs in groups.items():
        if len(rs) < 2:
            continue

        def mean(k):
            v = [r[k] for r in rs if r[k] is not None]
            return round(float(np.mean(v)), 4) if v else None

        pooled = [r["ari_pooled"] for r in rs]
        out.append(dict(dataset=ds, labels=lab, n_seeds=len(rs), ari_pooled=mean("ari_pooled"),
                        ari_pooled_range=f"{min(pooled):.3f}–{max(pooled):.3f}", ari_rna=mean("ari_rna"),
                        ari_atac=mean("ari_atac"), atac_in_rna_only=max(r["atac_in_rna_only"] for r in rs),
                        n_clusters=mean("n_clusters"), ari_genes=mean("ari_genes"), ari_regions=mean("ari_regions"),
                        n_iter=mean("n_iter"), fit_seconds=mean("fit_seconds")))
    return out


def summary(rows):
    """Mean pooled ARI/NMI per (scenario prefix, labelling) for the simulated scenarios."""
    groups = {}
    for r in rows:
        prefix = r["dataset"].split("_seed")[0]
        groups.setdefault((prefix, r["labels"]), []).append(r)
    out = []
    for (prefix, lab), rs in groups.items():
        if len(rs) > 1:
            out.append(dict(scenario=prefix, labels=lab, n=len(rs),
                            mean_ari_pooled=round(float(np.mean([r["ari_pooled"] for r in rs])), 4),
                            min_ari_pooled=round(float(np.min([r["ari_pooled"] for r in rs])), 4),
                            mean_nmi_pooled=round(float(np.mean([r["nmi_pooled"] for r in rs])), 4),
                            max_atac_in_rna_only=round(float(np.max([r["atac_in_rna_only"] for r in rs])), 4)))
    return out


def markdown_table(rows, keys):
    """Lines of a Markdown table of ``rows`` (dicts) in the columns ``keys``; None is written as "–"."""
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("–" if r[k] is None else str(r[k]) for k in keys) + " |" for r in rows]
    return lines


def markdown(rows, command):
    lines = [f"<!-- generated by: {command} -->", ""]
    seeds = seed_summary(rows)
    if seeds:
        lines += markdown_table(seeds, SEED_COLUMNS) + ["", "Every fit:", ""]
    lines += markdown_table(rows, COLUMNS)
    summ = summary(rows)
    if summ:
        lines += [""] + markdown_table(summ, list(summ[0]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", help="dataset folders in the shared format (no simulation when given)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    ap.add_argument("--quick", action="store_true", help="smaller simulated datasets")
    ap.add_argument("--seeds", default="0", help="random_state of the fits, comma-separated (one fit per seed)")
    ap.add_argument("--labels", default=",".join(LABELINGS),
                    help=f"labellings to score, comma-separated (default: all of {','.join(LABELINGS)})")
    ap.add_argument("--json", help="write all rows to this JSON file")
    ap.add_argument("--markdown", help="write the results table to this Markdown file")
    ap.add_argument("--mosaic", action="store_true",
                    help="mosaic designs (simulated, or folders in the layout of snare_mouse_cortex_mosaic) with "
                         "fastjmt.fit_mosaic: benchmarks/mosaic.py quality")
    a = ap.parse_args(argv)
    if a.mosaic:
        import mosaic

        return mosaic.main(["quality", *a.folders, "--seeds", a.seeds]
                           + (["--markdown", a.markdown] if a.markdown else []))
    command = "python benchmarks/protocol.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sources = folders(a.folders) if a.folders else simulated(a.scenario or sorted(SCENARIOS), "quick" if a.quick
                                                             else "full")
    rows = []
    widths = [24 if c == "dataset" else max(8, len(c)) for c in COLUMNS]
    print(" ".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths)))
    keep = set(a.labels.split(","))
    for name, rna, atac, ga, ry, ay, truth in sources:
        for seed in (int(x) for x in a.seeds.split(",")):
            for r in evaluate(name, rna, atac, ga, ry, ay, dict(random_state=seed), truth, keep):
                rows.append(r)
                print(" ".join(f"{str(r[c])[:w]:>{w}}" for c, w in zip(COLUMNS, widths)), flush=True)
    for s in summary(rows) + seed_summary(rows):
        print(s)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(command=command, rows=rows, summary=summary(rows), seeds=seed_summary(rows)), f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown(rows, command))
    return rows


if __name__ == "__main__":
    main()

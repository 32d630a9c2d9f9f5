"""fastjmt side by side with its peers (LIGER, scMoMaT, GLUE, a scikit-learn baseline) on one data folder.

Usage::

    python benchmarks/peers.py ../shared/data/sim_symsim_5clust_equal [--peers ../shared/peers] [--threads 2]
        [--k 20] [--only pyliger scmomat] [--markdown FILE] [--json FILE]

Runs, one after another and each in a new process with the same thread count:
fastjmt (defaults, ``random_state=--seed``; K and the layout from the label
files, as ``protocol.py``), then every peer whose environment exists under
``--peers`` (``<peer>/venv/bin/python <peer>/run.py DATA --k K --out OUT
--seed S --threads T``: the runners, pinned requirements and install script
of ``../shared/peers``; they are never dependencies of fastjmt). The peers'
folder must be writable copy with their venvs beside the runners
(``bash install_all.sh`` there).

Prints one table: fit seconds, seconds to labels (fit + the clustering that
gives the labels), the whole process's wall time (loading, preprocessing,
imports included), peak RSS, ARI pooled / RNA / ATAC, and for each peer the
ratios peer / fastjmt of the seconds to labels and of the fit seconds, and its
pooled ARI minus fastjmt's.

What each time covers:

* fastjmt: "fit" is the wall time of ``fastjmt.fit`` (its preprocessing and
  spectral start included), "labels" adds whatever the result's default labels
  cost (``res.labels_rna`` and ``res.labels_atac`` are read and timed, so a
  change of the default labelling is measured as it is). The Numba cache is
  filled by a warm-up fit in its own process first (``--cold`` skips it, so
  the compile is then inside the fit time).
* peers: as their runners report them (``metrics.json``): "fit" is their
  ``fit_seconds`` (pyliger: ``optimize_ALS`` + ``quantile_norm``; scMoMaT: model
  + ``train_func``; preprocessing not included), "labels" adds their clustering
  (``cluster_seconds`` or ``postprocess_cluster_seconds``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: name -> (folder under --peers, extra runner arguments)
PEERS = {
    "pyliger": ("pyliger", []),
    "scmomat": ("scmomat", []),
    "scglue": ("scglue", []),
    "sklearn_pca": ("sklearn_baseline", ["--method", "pca"]),
    "sklearn_nmf": ("sklearn_baseline", ["--method", "nmf"]),
}
DEFAULT_PEERS = ("pyliger", "scmomat")
CLUSTER_KEYS = ("cluster_seconds", "postprocess_cluster_seconds")


def run_fastjmt(data_dir: str, out: str, seed: int, threads: int, warmup: bool = False) -> dict:
    """In this (new) process: fit one folder with fastjmt's defaults, time the labels, write metrics.json."""
    import resource
    import warnings

    import numpy as np

    t_all = time.perf_counter()
    import fastjmt
    from evaluate import load_folder  # this script's folder is on sys.path (run as a script)
    from protocol import layout_from_labels

    if warmup:  # fills the Numba cache; nothing measured
        d = fastjmt.simulate(n_rna=300, n_atac=300, n_genes=200, n_regions=600, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=5, max_iter=3, n_threads=threads)
        return {}
    rna, atac, ga, ry, ay = load_folder(data_dir)
    layout = layout_from_labels(ry, ay)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fastjmt.ConvergenceWarning)
        t0 = time.perf_counter()
        res = fastjmt.fit(rna, atac, ga, n_shared=layout[0], n_rna_only=layout[1], n_atac_only=layout[2],
                          random_state=seed, n_threads=threads)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        lr, la = np.asarray(res.labels_rna), np.asarray(res.labels_atac)
        t_lab = time.perf_counter() - t0
    true = np.concatenate([np.asarray(ry).astype(str), np.asarray(ay).astype(str)])
    pred = np.concatenate([lr.astype(str), la.astype(str)])
    m = dict(method="fastjmt", ari=fastjmt.adjusted_rand_index(true, pred),
             ari_rna=fastjmt.adjusted_rand_index(np.asarray(ry).astype(str), lr.astype(str)),
             ari_atac=fastjmt.adjusted_rand_index(np.asarray(ay).astype(str), la.astype(str)),
             n_clusters=int(len(set(pred.tolist()))), fit_seconds=t_fit, cluster_seconds=t_lab,
             peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
             total_seconds=time.perf_counter() - t_all, n_iter=int(res.n_iter), converged=bool(res.converged),
             stop_reason=getattr(res, "stop_reason", ""), k=int(res.K), threads=threads, seed=seed,
             warnings=[str(w.message) for w in caught], version=fastjmt.__version__)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(m, f, indent=1)
    return m


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[v] = str(threads)
    return env


def _run(cmd, threads, log):
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env(threads))
    return rc, time.perf_counter() - t0


def row_of(metrics: dict, wall: float) -> dict:
    fit = float(metrics["fit_seconds"])
    clus = next((float(metrics[k]) for k in CLUSTER_KEYS if metrics.get(k) is not None), 0.0)
    return dict(method=metrics["method"], fit_s=fit, labels_s=fit + clus, total_s=wall,
                rss_mb=float(metrics["peak_rss_mb"]), ari=float(metrics["ari"]), ari_rna=float(metrics["ari_rna"]),
                ari_atac=float(metrics["ari_atac"]), n_clusters=metrics.get("n_clusters"))


def table(rows: list, dataset: str) -> list:
    """Markdown lines: one row per method, ratios against fastjmt (the first row)."""
    ref = rows[0]
    head = ["dataset", "method", "fit s", "labels s", "process s", "peak RSS MB", "ARI pooled", "ARI RNA",
            "ARI ATAC", "clusters", "labels s / fastjmt", "fit s / fastjmt", "RSS / fastjmt", "ΔARI pooled vs fastjmt"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rat = ["–"] * 4 if r is ref else [f"**{r['labels_s'] / ref['labels_s']:.1f}×**",
                                          f"{r['fit_s'] / ref['fit_s']:.1f}×", f"{r['rss_mb'] / ref['rss_mb']:.2f}×",
                                          f"{r['ari'] - ref['ari']:+.3f}"]
        lines.append("| " + " | ".join([dataset, r["method"], f"{r['fit_s']:.2f}", f"{r['labels_s']:.2f}",
                                        f"{r['total_s']:.1f}", f"{r['rss_mb']:.0f}", f"{r['ari']:.3f}",
                                        f"{r['ari_rna']:.3f}", f"{r['ari_atac']:.3f}", str(r["n_clusters"])] + rat)
                     + " |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--peers", default=os.path.join(HERE, "..", "..", "shared", "peers"),
                    help="the peers' folder with their venvs beside the runners (default ../shared/peers)")
    ap.add_argument("--only", nargs="*", choices=sorted(PEERS), help=f"peers to run (default {DEFAULT_PEERS})")
    ap.add_argument("--k", type=int, default=20, help="the peers' number of factors (LIGER's vignette: 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="folder for the runs' outputs (default: a temporary folder)")
    ap.add_argument("--cold", action="store_true", help="no warm-up fit: fastjmt's compile is in its fit time")
    ap.add_argument("--markdown", help="append the table to this Markdown file")
    ap.add_argument("--json", help="write the rows to this JSON file")
    ap.add_argument("--_fastjmt", nargs=2, metavar=("OUT", "WARMUP"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._fastjmt:
        run_fastjmt(a.data_dir, a._fastjmt[0], a.seed, a.threads, warmup=a._fastjmt[1] == "1")
        return None

    name = os.path.basename(os.path.normpath(a.data_dir))
    out = a.out or tempfile.mkdtemp(prefix=f"peers_{name}_")
    os.makedirs(out, exist_ok=True)
    me = [sys.executable, os.path.abspath(__file__), os.path.abspath(a.data_dir), "--threads", str(a.threads),
          "--seed", str(a.seed)]
    if not a.cold:
        _run(me + ["--_fastjmt", os.path.join(out, "warmup"), "1"], a.threads, os.path.join(out, "warmup.log"))
    rows, notes = [], []
    rc, wall = _run(me + ["--_fastjmt", os.path.join(out, "fastjmt"), "0"], a.threads, os.path.join(out, "fastjmt.log"))
    if rc:
        raise SystemExit(f"fastjmt failed (rc={rc}); see {os.path.join(out, 'fastjmt.log')}")
    with open(os.path.join(out, "fastjmt", "metrics.json")) as f:
        fm = json.load(f)
    rows.append(row_of(fm, wall))
    notes.append(f"fastjmt: K={fm['k']}, {fm['n_iter']} epochs, converged={fm['converged']} "
                 f"({fm['stop_reason'] or 'n/a'}), {len(fm['warnings'])} warning(s)")
    peers_dir = os.path.abspath(a.peers)
    for p in (a.only if a.only is not None else DEFAULT_PEERS):
        folder, extra = PEERS[p]
        py, runner = (os.path.join(peers_dir, folder, "venv", "bin", "python"),
                      os.path.join(peers_dir, folder, "run.py"))
        if not (os.path.exists(py) and os.path.exists(runner)):
            notes.append(f"{p}: no environment at {os.path.dirname(py)} (bash install_all.sh {folder}); skipped")
            continue
        pout = os.path.join(out, p)
        rc, wall = _run([py, runner, os.path.abspath(a.data_dir), "--k", str(a.k), "--out", pout, "--seed",
                         str(a.seed), "--threads", str(a.threads)] + extra, a.threads, os.path.join(out, f"{p}.log"))
        if rc or not os.path.exists(os.path.join(pout, "metrics.json")):
            notes.append(f"{p}: failed (rc={rc}), see {os.path.join(out, p + '.log')}")
            continue
        with open(os.path.join(pout, "metrics.json")) as f:
            rows.append(row_of(json.load(f), wall))
        print(f"done: {p} ({wall:.0f} s)", file=sys.stderr, flush=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = table(rows, name)
    print("\n".join(lines))
    for n in notes:
        print(f"- {n}")
    print(f"- {when}, {a.threads} threads, seed {a.seed}, peers' k = {a.k}; outputs in {out}")
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write("\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes) + f"- {when}\n\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(dataset=name, when=when, threads=a.threads, k=a.k, rows=rows, notes=notes), f, indent=1)
    return rows


if __name__ == "__main__":
    main()

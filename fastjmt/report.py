"""A fit's report on disk: the result, cluster tables, numbers and (with matplotlib) figures."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .api import JMTResult
from .metrics import pooled_scores


def write_report(res: JMTResult, out_dir, rna_cells: Optional[Sequence] = None, atac_cells: Optional[Sequence] = None,
                 rna_labels: Optional[Sequence] = None, atac_labels: Optional[Sequence] = None) -> dict:
    """Write ``result.npz``, ``clusters_rna.tsv``, ``clusters_atac.tsv``, ``report.md`` and figures to ``out_dir``.

    Figures (``loss.png``, ``association.png``, ``composition.png``,
    ``embedding.png``) are drawn when matplotlib is installed, on their own
    canvas (the caller's matplotlib backend is left as it is). The report gives
    the gene activity coverage and the number of cells without counts (their
    cluster is ``NA`` in the tables). With true labels it also gives ARI/NMI
    per modality and pooled.

    Returns
    -------
    dict
        The paths written, by name.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"result": os.path.join(out_dir, "result.npz")}
    res.save(paths["result"])
    empties = {}
    for name, labels, cells in (("rna", res.labels_rna, rna_cells), ("atac", res.labels_atac, atac_cells)):
        empty = getattr(res, f"empty_{name}")
        empty = np.zeros(labels.shape[0], bool) if empty is None else np.asarray(empty, bool)
        empties[name] = empty
        cells = np.arange(labels.shape[0]).astype(str) if cells is None else np.asarray(cells).astype(str)
        p = os.path.join(out_dir, f"clusters_{name}.tsv")
        with open(p, "w") as fh:
            fh.write("cell\tcluster\n")
            fh.writelines(f"{c}\t{'NA' if e else k}\n" for c, k, e in zip(cells, labels, empty))
        paths[f"clusters_{name}"] = p
    cov = res.link_coverage
    # a Dask fit's labels are Dask arrays: counted here in memory (one integer per cell)
    counts = [np.bincount(np.asarray(lab), minlength=res.K) for lab in (res.labels_rna, res.labels_atac)]
    lines = [
        "# fastjmt report", "",
        f"- clusters: K = {res.K} ({res.n_shared} shared, {res.n_rna_only} RNA-only, {res.n_atac_only} ATAC-only)",
        f"- epochs: {res.n_iter} ({res.n_undone} undone by backtracking), converged: {res.converged}, "
        f"interrupted: {res.interrupted}, seed: {res.seed}",
        f"- fit time: {res.fit_seconds:.2f} s, final loss: {res.loss:.6g}",
        *([f"- gene activity coverage: {cov['genes_linked']} of {cov['n_genes']} RNA genes "
           f"({100 * cov['gene_share']:.1f} %) and {cov['regions_linked']} of {cov['n_regions']} ATAC regions "
           f"({100 * cov['region_share']:.1f} %) have at least one link"] if cov else []),
        f"- cells without counts (no cluster, NA in the tables): RNA {int(empties['rna'].sum())}, "
        f"ATAC {int(empties['atac'].sum())}", "",
        "| term | final value |", "|---|---|",
        *[f"| {t} | {v:.6g} |" for t, v in zip(res.loss_terms, res.loss_history[-1])], "",
        "| cluster | RNA cells | ATAC cells |", "|---|---|---|",
        *[f"| {k} | {a} | {b} |" for k, (a, b) in enumerate(zip(*counts))],
    ]
    if rna_labels is not None and atac_labels is not None:
        s = pooled_scores(res, rna_labels, atac_labels)
        lines += ["", "| score | RNA | ATAC | pooled |", "|---|---|---|---|",
                  f"| ARI | {s['ari_rna']:.3f} | {s['ari_atac']:.3f} | {s['ari_pooled']:.3f} |",
                  f"| NMI | {s['nmi_rna']:.3f} | {s['nmi_atac']:.3f} | {s['nmi_pooled']:.3f} |"]
    try:
        import matplotlib  # noqa: F401  (figures are drawn on their own canvas: the caller's backend is kept)

        from . import plot
    except ImportError:
        lines += ["", "(figures skipped: matplotlib is not installed)"]
    else:
        figs = {"loss": plot.plot_loss(res), "association": plot.plot_association(res),
                "composition": plot.plot_composition(res, rna_labels, atac_labels),
                "embedding": plot.plot_embedding(res, rna_labels, atac_labels)}
        lines += [""]
        for name, fig in figs.items():
            p = os.path.join(out_dir, f"{name}.png")
            fig.savefig(p, dpi=110)
            paths[name] = p
            lines.append(f"![{name}]({name}.png)")
    paths["report"] = os.path.join(out_dir, "report.md")
    with open(paths["report"], "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return paths

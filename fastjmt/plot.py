"""Figures of a fit (needs the ``plot`` extra: ``pip install "fastjmt[plot]"``).

Every function returns a matplotlib ``Figure`` made without pyplot: it never
switches or starts the caller's backend and draws nothing on screen by itself;
save it with ``fig.savefig(path)`` (Jupyter shows a returned figure inline).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .api import JMTResult


def _figure(**kw):
    """A pyplot-free ``Figure`` with an Agg canvas attached (no backend is chosen or switched)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('plots need matplotlib: pip install "fastjmt[plot]"') from exc
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


#: What each loss term is and which way is better, for the loss figure's y-axis labels.
_TERM_LABELS = {
    "total": "objective (lower is better)",
    "recon_atac": "a1 × ATAC reconstruction MSE",
    "recon_rna": "a2 × RNA reconstruction MSE",
    "cos_S": "cosine(S_rna, S_atac)\n(higher is better)",
    "cos_features": "cosine(C_genes, A C_regions)\n(higher is better)",
    "mask": "membership in the other\nmodality's clusters",
    "entropy": "mean membership entropy",
}


def plot_loss(res: JMTResult):
    """The objective and each of its terms per epoch (epoch 0 = the starting point).

    The reconstruction, mask and entropy terms are minimised; the two cosines
    are couplings the objective rewards (it subtracts ``a3 · cos_S`` and
    ``a4 · cos_features``), so they rise as the fit improves. Each panel
    says which way is better.
    """
    terms = list(res.loss_terms)
    fig = _figure(figsize=(14, 6.5), constrained_layout=True)
    axes = fig.subplots(2, 4)
    for ax, t in zip(axes.ravel(), ["total"] + [t for t in terms if t != "total"]):
        ax.plot(res.loss_history[:, terms.index(t)], lw=1.5, color="C1" if t.startswith("cos") else "C0")
        ax.set_title(t)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_TERM_LABELS.get(t, t), fontsize=8)
    for ax in axes.ravel()[len(terms):]:
        ax.axis("off")
    fig.suptitle(f"fastjmt objective and its terms ({res.n_iter} epochs, converged={res.converged}); "
                 "orange: couplings, rising is better")
    return fig


def plot_association(res: JMTResult):
    """S_rna and S_atac as heatmaps (cell clusters × feature clusters), on one colour scale."""
    fig = _figure(figsize=(10, 4.5), constrained_layout=True)
    axes = fig.subplots(1, 2)
    vmax = float(max(np.abs(res.S_rna).max(), np.abs(res.S_atac).max(), 1e-12))
    for ax, S, name in ((axes[0], res.S_rna, "RNA: S_rna (genes)"), (axes[1], res.S_atac, "ATAC: S_atac (regions)")):
        im = ax.imshow(S, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(name)
        ax.set_xlabel("feature cluster (program)")
        ax.set_ylabel("cell cluster")
        ax.set_xticks(range(res.K))
        ax.set_yticks(range(res.K))
    cb = fig.colorbar(im, ax=axes, shrink=0.8)
    cb.set_label("association S (cell cluster → feature program)")
    fig.suptitle("Cluster associations: a strong diagonal means each cell cluster has its own feature program")
    return fig


def plot_composition(res: JMTResult, rna_labels: Optional[Sequence] = None, atac_labels: Optional[Sequence] = None):
    """Cells per cluster in each modality; with labels, stacked by label (what each cluster is made of)."""
    fig = _figure(figsize=(12, 4.5), constrained_layout=True)
    axes = fig.subplots(1, 2)
    all_classes = np.unique(np.concatenate([np.asarray(x).astype(str) for x in (rna_labels, atac_labels)
                                            if x is not None])) if (rna_labels is not None or atac_labels is not None) \
        else np.array([])
    palette = dict(zip(all_classes, _colors(len(all_classes))))
    for ax, pred, lab, name in ((axes[0], res.labels_rna, rna_labels, "RNA"),
                                (axes[1], res.labels_atac, atac_labels, "ATAC")):
        pred = np.asarray(pred)  # a Dask fit's labels are Dask arrays: counted here in memory (one int per cell)
        if lab is None:
            ax.bar(range(res.K), np.bincount(pred, minlength=res.K), color="C0")
        else:
            lab = np.asarray(lab).astype(str)
            bottom = np.zeros(res.K)
            for cls in np.unique(lab):
                h = np.bincount(pred[lab == cls], minlength=res.K)
                ax.bar(range(res.K), h, bottom=bottom, label=cls, color=palette[cls])
                bottom += h
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(f"{name}: cells per cluster")
        ax.set_xlabel("cluster (0…n_shared−1 shared)")
        ax.set_ylabel("cells")
        ax.set_xticks(range(res.K))
    return fig


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def embed_2d(res: JMTResult, method: str = "auto", random_state: int = 0) -> np.ndarray:
    """A 2-D embedding of all cells (RNA first, then ATAC): UMAP if available, else PCA.

    It embeds each cell's feature-program activity (``res.programs_*``,
    standardised per modality so that the two share a scale) next to its
    centred log-memberships: memberships alone are nearly one-hot after a fit,
    the program activities keep the variation within a cluster.
    """
    return _embed(_embedding_features(res), method, random_state)[0]


def _embedding_features(res: JMTResult) -> np.ndarray:
    """Standardised program activities next to centred log-memberships, all cells (RNA first)."""
    def z(P):
        P = np.asarray(P, dtype=np.float64)
        return (P - P.mean(axis=0)) / np.maximum(P.std(axis=0), 1e-12)

    C = np.vstack([res.C_rna, res.C_atac]).astype(np.float64)
    L = np.log(np.clip(C, 1e-12, None))
    L -= L.mean(axis=1, keepdims=True)
    L /= max(L.std(), 1e-12)
    X = np.hstack([np.vstack([z(res.programs_rna), z(res.programs_atac)]), L])
    return X


def _embed(X: np.ndarray, method: str, random_state: int):
    """(2-D coordinates, axis name): UMAP when asked or available, else the first two principal components."""
    X = np.asarray(X)  # a Dask fit's per-cell arrays: drawn from memory
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError:
            if method == "umap":
                raise
        else:
            return umap.UMAP(random_state=random_state).fit_transform(X), "UMAP"
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ Vt[:2].T, "PC"


def plot_embedding(res: JMTResult, rna_labels: Optional[Sequence] = None, atac_labels: Optional[Sequence] = None,
                   method: str = "auto"):
    """The joint embedding coloured by modality, by cluster, and (if given) by true label.

    All cells are drawn in one random order, so neither modality hides the
    other; axes are the embedding's (UMAP or PCA) coordinates.
    """
    from matplotlib.lines import Line2D

    E, axis = _embed(_embedding_features(res), method, 0)
    n_r = res.C_rna.shape[0]
    panels = [("modality", np.r_[np.zeros(n_r, int), np.ones(res.C_atac.shape[0], int)], ["RNA", "ATAC"]),
              ("fastjmt cluster", np.r_[res.labels_rna, res.labels_atac], [str(k) for k in range(res.K)])]
    if rna_labels is not None and atac_labels is not None:
        lab = np.r_[np.asarray(rna_labels).astype(str), np.asarray(atac_labels).astype(str)]
        names, codes = np.unique(lab, return_inverse=True)
        panels.append(("given label", codes, list(names)))
    fig = _figure(figsize=(5.6 * len(panels), 4.8), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    order = np.random.default_rng(0).permutation(E.shape[0])  # interleaved: no modality drawn over the other
    for ax, (title, codes, names) in zip(axes, panels):
        colors = np.array(_colors(len(names)))
        ax.scatter(E[order, 0], E[order, 1], s=3, c=colors[codes[order]], rasterized=True, alpha=0.7, linewidths=0)
        handles = [Line2D([], [], marker="o", ls="", color=colors[c], label=n) for c, n in enumerate(names)]
        ax.legend(handles=handles, title=title, fontsize=7, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set_title(f"cells by {title}")
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Joint embedding of {n_r} RNA and {res.C_atac.shape[0]} ATAC cells "
                 "(program activities + memberships)")
    return fig

"""Figures of a fit (needs the ``plot`` extra: ``pip install "fastjmt[plot]"``).

Every function returns a matplotlib ``Figure`` and draws nothing on screen by
itself; save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .api import JMTResult


def _plt():
    try:
        import matplotlib

        matplotlib.use(matplotlib.get_backend())  # keep the user's backend
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('plots need matplotlib: pip install "fastjmt[plot]"') from exc
    return plt


def plot_loss(res: JMTResult):
    """The loss history: total, and every term on its own axis (epoch 0 = the starting point)."""
    plt = _plt()
    terms = list(res.loss_terms)
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), constrained_layout=True)
    for ax, t in zip(axes.ravel(), ["total"] + [t for t in terms if t != "total"]):
        ax.plot(res.loss_history[:, terms.index(t)], lw=1.5)
        ax.set_title(t)
        ax.set_xlabel("epoch")
    for ax in axes.ravel()[len(terms):]:
        ax.axis("off")
    fig.suptitle(f"fastjmt loss ({res.n_iter} epochs, converged={res.converged})")
    return fig


def plot_association(res: JMTResult):
    """S_rna and S_atac as heatmaps (cell clusters × feature clusters), on one colour scale."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
    vmax = float(max(np.abs(res.S_rna).max(), np.abs(res.S_atac).max(), 1e-12))
    for ax, S, name in ((axes[0], res.S_rna, "S_rna"), (axes[1], res.S_atac, "S_atac")):
        im = ax.imshow(S, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(name)
        ax.set_xlabel("feature cluster")
        ax.set_ylabel("cell cluster")
        ax.set_xticks(range(res.K))
        ax.set_yticks(range(res.K))
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig


def plot_composition(res: JMTResult, rna_labels: Optional[Sequence] = None, atac_labels: Optional[Sequence] = None):
    """Cells per cluster in each modality; with labels, stacked by label (what each cluster is made of)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True, sharey=False)
    all_classes = np.unique(np.concatenate([np.asarray(x).astype(str) for x in (rna_labels, atac_labels)
                                            if x is not None])) if (rna_labels is not None or atac_labels is not None) \
        else np.array([])
    palette = dict(zip(all_classes, _colors(plt, len(all_classes))))
    for ax, pred, lab, name in ((axes[0], res.labels_rna, rna_labels, "RNA"),
                                (axes[1], res.labels_atac, atac_labels, "ATAC")):
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
        ax.set_xticks(range(res.K))
    return fig


def _colors(plt, n):
    cmap = plt.cm.tab10 if n <= 10 else plt.cm.tab20
    return [cmap(i % cmap.N) for i in range(n)]


def embed_2d(res: JMTResult, method: str = "auto", random_state: int = 0) -> np.ndarray:
    """A 2-D embedding of all cells (RNA first, then ATAC): UMAP if available, else PCA.

    It embeds each cell's feature-program activity (``res.programs_*``,
    standardised per modality so that the two share a scale) next to its
    centred log-memberships: memberships alone are nearly one-hot after a fit,
    the program activities keep the variation within a cluster.
    """
    def z(P):
        P = np.asarray(P, dtype=np.float64)
        return (P - P.mean(axis=0)) / np.maximum(P.std(axis=0), 1e-12)

    C = np.vstack([res.C_rna, res.C_atac]).astype(np.float64)
    L = np.log(np.clip(C, 1e-12, None))
    L -= L.mean(axis=1, keepdims=True)
    L /= max(L.std(), 1e-12)
    X = np.hstack([np.vstack([z(res.programs_rna), z(res.programs_atac)]), L])
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError:
            if method == "umap":
                raise
        else:
            return umap.UMAP(random_state=random_state).fit_transform(X)
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ Vt[:2].T


def plot_embedding(res: JMTResult, rna_labels: Optional[Sequence] = None, atac_labels: Optional[Sequence] = None,
                   method: str = "auto"):
    """The joint embedding coloured by modality, by cluster, and (if given) by true label."""
    plt = _plt()
    E = embed_2d(res, method)
    n_r = res.C_rna.shape[0]
    panels = [("modality", np.r_[np.zeros(n_r, int), np.ones(res.C_atac.shape[0], int)], ["RNA", "ATAC"]),
              ("cluster", np.r_[res.labels_rna, res.labels_atac], [str(k) for k in range(res.K)])]
    if rna_labels is not None and atac_labels is not None:
        lab = np.r_[np.asarray(rna_labels).astype(str), np.asarray(atac_labels).astype(str)]
        names, codes = np.unique(lab, return_inverse=True)
        panels.append(("label", codes, list(names)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), constrained_layout=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(E.shape[0])  # no modality drawn wholly on top of the other
    for ax, (title, codes, names) in zip(np.atleast_1d(axes), panels):
        colors = _colors(plt, len(names))
        for c, name in enumerate(names):
            sel = order[codes[order] == c]
            ax.scatter(E[sel, 0], E[sel, 1], s=3, color=colors[c], label=name, rasterized=True, alpha=0.7)
        ax.set_title(f"by {title}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=4, fontsize=7, loc="best")
    return fig

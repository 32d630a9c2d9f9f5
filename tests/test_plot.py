"""Figures (skipped without matplotlib): each one draws what it says and saves."""

import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import fastjmt  # noqa: E402
from fastjmt import plot  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    d = fastjmt.simulate(n_rna=300, n_atac=300, n_genes=150, n_regions=300, n_shared=2, n_rna_only=1,
                         random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return d, fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=2, n_rna_only=1, max_iter=30)


def test_loss_figure(fitted, tmp_path):
    _, r = fitted
    fig = plot.plot_loss(r)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:7] == ["total", "recon_atac", "recon_rna", "cos_S", "cos_features", "mask", "entropy"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), r.loss_history[:, -1])
    ylabels = [ax.get_ylabel() for ax in fig.axes[:7]]
    assert all(ylabels) and "higher is better" in ylabels[3] and "higher is better" in ylabels[4]
    assert "lower is better" in ylabels[0] and "loss (" not in fig.get_suptitle()
    fig.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_association_figure(fitted):
    _, r = fitted
    fig = plot.plot_association(r)
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    np.testing.assert_array_equal(ims[0].get_array(), r.S_rna)
    np.testing.assert_array_equal(ims[1].get_array(), r.S_atac)
    colorbar = [ax for ax in fig.axes if not ax.images]
    assert colorbar and "association" in colorbar[0].get_ylabel()


def test_composition_figure_counts_cells(fitted):
    d, r = fitted
    fig = plot.plot_composition(r, d.rna_labels, d.atac_labels)
    heights = np.zeros(r.K)
    for patch in fig.axes[0].patches:
        heights[int(round(patch.get_x() + patch.get_width() / 2))] += patch.get_height()
    np.testing.assert_array_equal(heights, np.bincount(r.labels_rna, minlength=r.K))
    plot.plot_composition(r)  # without labels


def test_embedding_figure(fitted):
    d, r = fitted
    E = plot.embed_2d(r, method="pca")
    assert E.shape == (600, 2) and np.all(np.isfinite(E))
    fig = plot.plot_embedding(r, d.rna_labels, d.atac_labels, method="pca")
    assert [ax.get_title() for ax in fig.axes] == ["cells by modality", "cells by fastjmt cluster",
                                                   "cells by given label"]
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 600
    for ax in fig.axes:
        assert ax.get_xlabel() == "PC 1" and ax.get_ylabel() == "PC 2"
        assert ax.get_legend() is not None and ax.get_legend().get_title().get_text()
    # RNA and ATAC interleaved: the last 100 points drawn hold both modalities, not ATAC only
    coll = fig.axes[0].collections[0]
    colours = {tuple(np.round(c, 3)) for c in coll.get_facecolors()[-100:]}
    assert len(colours) == 2


def test_figures_and_report_keep_the_callers_backend(fitted, tmp_path):
    from fastjmt.report import write_report

    d, r = fitted
    matplotlib.use("svg")
    try:
        write_report(r, tmp_path / "rep")
        plot.plot_loss(r)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use("Agg")
    assert (tmp_path / "rep" / "embedding.png").exists()

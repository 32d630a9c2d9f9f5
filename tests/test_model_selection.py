"""Choosing K by subsampling stability."""

import numpy as np
import pytest

import fastjmt


def test_select_k_finds_the_simulated_number_of_types():
    d = fastjmt.simulate(n_rna=500, n_atac=500, n_genes=300, n_regions=900, n_shared=4, random_state=1)
    sel = fastjmt.select_k(d.rna, d.atac, d.gene_activity, k_values=[6, 2, 4], n_seeds=2, max_iter=40)
    np.testing.assert_array_equal(sel.k_values, [2, 4, 6])  # sorted
    assert sel.best_k == 4
    assert sel.stability[1] == sel.stability.max() > 0.95
    assert sel.losses.shape == (3, 2) and np.all(np.isfinite(sel.losses))
    assert "<- best" in sel.table().splitlines()[2]


def test_select_k_with_modality_specific_columns_and_reproducible():
    d = fastjmt.simulate(n_rna=300, n_atac=300, n_genes=200, n_regions=600, n_shared=2, n_rna_only=1, random_state=2)
    kw = dict(k_values=[3, 4], n_rna_only=1, n_seeds=2, max_iter=20)
    a = fastjmt.select_k(d.rna, d.atac, d.gene_activity, **kw)
    b = fastjmt.select_k(d.rna, d.atac, d.gene_activity, **kw)
    np.testing.assert_array_equal(a.stability, b.stability)
    assert a.best_k == 3


@pytest.mark.parametrize("kw, match", [
    (dict(k_values=[]), "at least one"),
    (dict(k_values=[1]), "k_values"),
    (dict(k_values=[2], n_rna_only=2), "k_values"),
    (dict(k_values=[3], n_seeds=1), "n_seeds"),
    (dict(k_values=[3], subsample=0), "subsample"),
    (dict(k_values=[3], n_shared=3), "n_shared"),
])
def test_select_k_bad_input(kw, match):
    d = fastjmt.simulate(n_rna=30, n_atac=30, n_genes=20, n_regions=40, random_state=0)
    with pytest.raises(ValueError, match=match):
        fastjmt.select_k(d.rna, d.atac, d.gene_activity, **kw)

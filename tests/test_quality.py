"""On simulated data with clear clusters the fit recovers them (argmax clusters, pooled over modalities)."""

import warnings

import numpy as np
import pytest

import fastjmt


def _fit_and_score(layout, seed):
    d = fastjmt.simulate(n_rna=800, n_atac=800, n_genes=400, n_regions=1200, separation=0.6, random_state=seed,
                         **layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        res = fastjmt.fit(d.rna, d.atac, d.gene_activity, random_state=seed, **layout)
    return res, fastjmt.pooled_scores(res, d.rna_labels, d.atac_labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_compositions_recovered(seed):
    res, s = _fit_and_score(dict(n_shared=5), seed)
    assert s["ari_pooled"] >= 0.9, s
    assert s["ari_rna"] >= 0.9 and s["ari_atac"] >= 0.85, s


@pytest.mark.parametrize("seed", [0, 1])
def test_unequal_compositions_recovered(seed):
    """The paper's scenario 2 shape: RNA has 3 types, ATAC 2, 2 shared."""
    res, s = _fit_and_score(dict(n_shared=2, n_rna_only=1), seed)
    assert s["ari_pooled"] >= 0.9, s
    atac_in_rna_only = np.mean(res.labels_atac == 2)
    assert atac_in_rna_only < 0.02
    assert np.mean(res.labels_rna == 2) > 0.2  # the RNA-only type does get its own column

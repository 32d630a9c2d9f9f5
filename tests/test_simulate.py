import numpy as np
import pytest
import scipy.sparse as sp

import fastjmt


def test_shapes_labels_and_sparsity():
    d = fastjmt.simulate(n_rna=300, n_atac=200, n_genes=100, n_regions=400, n_shared=2, n_rna_only=1,
                         n_atac_only=1, random_state=0)
    assert sp.isspmatrix_csr(d.rna) and d.rna.shape == (300, 100)
    assert sp.isspmatrix_csr(d.atac) and d.atac.shape == (200, 400)
    assert d.gene_activity.shape == (100, 400)
    assert set(np.unique(d.atac.data)) == {1.0}
    assert np.all(d.rna.data == np.round(d.rna.data)) and d.rna.data.min() >= 1
    assert set(d.rna_labels) == {"type_0", "type_1", "type_2"}
    assert set(d.atac_labels) == {"type_0", "type_1", "type_3"}
    assert 0.01 < d.atac.nnz / np.prod(d.atac.shape) < 0.4
    assert 0.05 < d.rna.nnz / np.prod(d.rna.shape) < 0.95
    depth = np.asarray(d.rna.sum(1)).ravel()
    assert depth.std() / depth.mean() > 0.2  # varying depth
    # every gene links to at most 3 regions, most genes to at least one
    links = np.diff(d.gene_activity.indptr)
    assert links.max() <= 3 and np.mean(links > 0) > 0.8


def test_reproducible_and_seed_dependent():
    a = fastjmt.simulate(n_rna=50, n_atac=50, n_genes=30, n_regions=60, random_state=5)
    b = fastjmt.simulate(n_rna=50, n_atac=50, n_genes=30, n_regions=60, random_state=5)
    c = fastjmt.simulate(n_rna=50, n_atac=50, n_genes=30, n_regions=60, random_state=6)
    assert (a.rna != b.rna).nnz == 0 and (a.atac != b.atac).nnz == 0
    assert (a.rna != c.rna).nnz > 0


def test_types_differ_in_expression():
    d = fastjmt.simulate(n_rna=600, n_atac=10, n_genes=200, n_regions=300, n_shared=2, separation=1.0,
                         random_state=1)
    X = d.rna.toarray()
    m0, m1 = X[d.rna_labels == "type_0"].mean(0), X[d.rna_labels == "type_1"].mean(0)
    assert np.corrcoef(np.log1p(m0), np.log1p(m1))[0, 1] < 0.99


def test_bad_arguments():
    with pytest.raises(ValueError):
        fastjmt.simulate(n_rna=0)
    with pytest.raises(ValueError):
        fastjmt.simulate(n_shared=0, n_rna_only=0, n_atac_only=1)


def test_proportions_make_a_rare_type_in_both_modalities():
    d = fastjmt.simulate(n_rna=500, n_atac=400, n_genes=50, n_regions=100, n_shared=4, n_rna_only=1,
                         proportions=[1, 1, 1, 0.1, 1], random_state=0)
    _, nr = np.unique(d.rna_labels, return_counts=True)
    assert nr.sum() == 500 and dict(zip(*np.unique(d.rna_labels, return_counts=True)))["type_3"] == 12
    counts_a = dict(zip(*np.unique(d.atac_labels, return_counts=True)))
    assert sum(counts_a.values()) == 400 and counts_a["type_3"] == 13 and "type_4" not in counts_a
    with pytest.raises(ValueError, match="proportions"):
        fastjmt.simulate(n_shared=2, proportions=[1, 0])
    with pytest.raises(ValueError, match="proportions"):
        fastjmt.simulate(n_shared=2, proportions=[1, 1, 1])


def test_atac_noise_moves_open_regions_and_keeps_binary():
    kw = dict(n_rna=50, n_atac=300, n_genes=40, n_regions=500, random_state=3)
    clean = fastjmt.simulate(**kw)
    noisy = fastjmt.simulate(atac_noise=0.5, **kw)
    assert (clean.rna != noisy.rna).nnz == 0  # only ATAC changes
    assert set(np.unique(noisy.atac.data)) == {1.0}
    overlap = clean.atac.multiply(noisy.atac).nnz / clean.atac.nnz
    assert 0.4 < overlap < 0.65  # about half the open regions kept (plus chance hits)
    assert 0.9 < noisy.atac.nnz / clean.atac.nnz <= 1.0
    with pytest.raises(ValueError, match="atac_noise"):
        fastjmt.simulate(atac_noise=1.0)


def test_feature_programs_mark_features_of_one_type():
    d = fastjmt.simulate(n_rna=400, n_atac=400, n_genes=300, n_regions=900, n_shared=3, separation=1.5,
                         random_state=0)
    for programs, X, labels in ((d.gene_programs, d.rna, d.rna_labels), (d.region_programs, d.atac, d.atac_labels)):
        assert programs.dtype == np.int64 and programs.min() >= -1 and programs.max() <= 2
        assert 0.02 < np.mean(programs >= 0) < 0.5
        # a feature's program type has the highest mean in that type's cells, for most such features
        X = sp.csr_matrix(X).toarray()
        X = X / X.sum(1, keepdims=True)
        means = np.stack([X[labels == f"type_{t}"].mean(0) for t in range(3)])
        marked = programs >= 0
        assert np.mean(means[:, marked].argmax(0) == programs[marked]) > 0.8


def test_feature_programs_do_not_change_the_data():
    # recording the programs draws nothing: the data of a seed are what they were before (checksums of 0.1.0)
    d = fastjmt.simulate(n_rna=50, n_atac=50, n_genes=30, n_regions=60, random_state=5)
    assert d.gene_programs.shape == (30,) and d.region_programs.shape == (60,)
    assert float(d.rna.sum()) == 78961.0 and float(d.rna.multiply(d.rna).sum()) == 13015623.0
    assert float(d.atac.sum()) == 329.0
    assert d.atac.indices[:20].tolist() == [8, 9, 10, 27, 33, 37, 50, 56, 7, 26, 44, 51, 52, 58, 4, 5, 25, 49, 52, 55]

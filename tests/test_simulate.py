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

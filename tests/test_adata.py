"""The AnnData adapter (skipped when anndata is not installed)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

anndata = pytest.importorskip("anndata")

import fastjmt  # noqa: E402
from fastjmt.adata import fit_anndata, read_matrix  # noqa: E402
from fastjmt.genome import GeneActivity  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    return fastjmt.simulate(n_rna=200, n_atac=180, n_genes=150, n_regions=300, n_shared=2, n_rna_only=1,
                            separation=1.0, random_state=0)


def _ads(d):
    genes = [f"g{i}" for i in range(d.rna.shape[1])]
    # regions on chr1, 1 kb apart, 500 bp long
    regions = [f"chr1:{1000 * j}-{1000 * j + 500}" for j in range(d.atac.shape[1])]
    rna = anndata.AnnData(X=d.rna.copy(), obs={"cell_type": d.rna_labels}, var={"name": genes})
    rna.var_names = genes
    atac = anndata.AnnData(X=d.atac.copy(), obs={"cell_type": d.atac_labels})
    atac.var_names = regions
    return rna, atac


def _fit(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fit_anndata(*a, **kw)


def _plain_fit(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fastjmt.fit(*a, **kw)


def test_results_land_where_scanpy_users_look(sim):
    rna, atac = _ads(sim)
    res = _fit(rna, atac, gene_activity=sim.gene_activity, n_shared=2, n_rna_only=1, max_iter=20)
    direct = _plain_fit(sim.rna, sim.atac, sim.gene_activity, n_shared=2, n_rna_only=1, max_iter=20)
    np.testing.assert_array_equal(rna.obsm["X_jmt"], direct.C_rna)
    np.testing.assert_array_equal(atac.obsm["X_jmt"], res.C_atac)
    names = [f"jmt_{k}" for k in range(res.n_clusters)]
    assert list(rna.obs["jmt_cluster"].cat.categories) == names
    assert (rna.obs["jmt_cluster"].astype(str).to_numpy() == np.array(names)[res.labels_rna]).all()
    assert (atac.obs["jmt_cluster"].astype(str).to_numpy() == np.array(names)[res.labels_atac]).all()
    assert (rna.obs["jmt_column"].astype(str).to_numpy() == np.array(["jmt_column_0", "jmt_column_1",
                                                                       "jmt_column_2"])[res.columns_rna]).all()
    np.testing.assert_array_equal(rna.uns["jmt"]["column_clusters"], res.column_clusters)
    assert rna.varm["jmt_C"].shape == (150, 3) and atac.varm["jmt_C"].shape == (300, 3)
    assert rna.uns["jmt"]["n_iter"] == res.n_iter and rna.uns["jmt"]["n_undone"] == res.n_undone
    assert rna.uns["jmt"]["S_rna"].shape == (3, 3)
    s = fastjmt.pooled_scores(res, sim.rna_labels, sim.atac_labels)
    assert s["ari_pooled"] > 0.9


def test_gene_activity_aligned_by_name_and_from_coordinates(sim, tmp_path):
    rna, atac = _ads(sim)
    # a GeneActivity with shuffled names aligns to the var order
    perm_g, perm_r = np.random.default_rng(0).permutation(150), np.random.default_rng(1).permutation(300)
    ga = GeneActivity(sim.gene_activity[perm_g][:, perm_r].tocsr(), np.asarray(rna.var_names)[perm_g],
                      np.asarray(atac.var_names)[perm_r])
    a = _fit(rna, atac, gene_activity=ga, n_shared=2, n_rna_only=1, max_iter=5, key="a")
    b = _plain_fit(sim.rna, sim.atac, sim.gene_activity, n_shared=2, n_rna_only=1, max_iter=5)
    np.testing.assert_array_equal(a.C_genes, b.C_genes)
    # genes from a BED-like table: gene i covers region i (plus a 100 bp promoter)
    bed = tmp_path / "genes.bed"
    bed.write_text("".join(f"chr1\t{1000 * i + 200}\t{1000 * i + 300}\t+\tg{i}\n" for i in range(150)))
    res = _fit(rna, atac, genes=bed, promoter=100, n_shared=2, n_rna_only=1, max_iter=5, key="b")
    assert rna.obsm["X_b"].shape == (200, 3) and res.n_iter == 5
    with pytest.raises(ValueError, match="pass gene_activity"):
        _fit(rna, atac, n_shared=2)
    with pytest.raises(ValueError, match="genes × regions"):
        _fit(rna, atac, gene_activity=sim.gene_activity.T, n_shared=2)


def test_layers_variable_genes_and_backed_files(sim, tmp_path):
    rna, atac = _ads(sim)
    rna.layers["counts"] = rna.X.copy()
    rna.X = sp.csr_matrix(rna.shape)  # .X empty: the layer must be used
    res = _fit(rna, atac, gene_activity=sim.gene_activity, rna_layer="counts", n_top_genes=40, n_shared=2,
               n_rna_only=1, max_iter=5)
    C = rna.varm["jmt_C"]
    assert np.isnan(C).all(axis=1).sum() == 110 and res.C_genes.shape == (40, 3)
    with pytest.raises(KeyError, match="layer"):
        _fit(rna, atac, gene_activity=sim.gene_activity, rna_layer="nope", n_shared=2)
    path = tmp_path / "atac.h5ad"
    atac.write_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    M = read_matrix(backed, chunk_rows=37)
    assert sp.isspmatrix_csr(M) and (M != atac.X).nnz == 0


def test_mudata_input(sim):
    mudata = pytest.importorskip("mudata")
    rna, atac = _ads(sim)
    md = mudata.MuData({"rna": rna, "atac": atac})
    res = _fit(md, gene_activity=sim.gene_activity, n_shared=2, n_rna_only=1, max_iter=5)
    assert md.mod["rna"].obsm["X_jmt"].shape == (200, res.K)


def _gtf_for(d, path, contig="1"):
    """One GTF gene line per simulated gene spanning its linked regions (Ensembl contig names, versioned ids)."""
    A = sp.csr_matrix(d.gene_activity)
    with open(path, "w") as fh:
        for i in range(A.shape[0]):
            c = A.indices[A.indptr[i]:A.indptr[i + 1]]
            ch, s, e = (contig, 1000 * c.min() + 1, 1000 * c.max() + 500) if c.size else \
                ("2", 10_000_000 + 10_000 * i + 1, 10_000_000 + 10_000 * i + 100)
            fh.write(f'{ch}\th\tgene\t{s}\t{e}\t.\t+\t.\tgene_id "ENSG{i:011d}.3"; gene_name "Sym{i}";\n')
    return path


@pytest.mark.parametrize("var_names", ["symbols", "unversioned_ids"])
def test_ucsc_peaks_ensembl_gtf_and_10x_gene_ids_still_integrate(sim, tmp_path, var_names):
    rna, atac = _ads(sim)  # peaks named chr1:…, the GTF uses contig "1"
    n = rna.n_vars
    rna.var_names = [f"Sym{i}" for i in range(n)] if var_names == "symbols" else [f"ENSG{i:011d}" for i in range(n)]
    res = _fit(rna, atac, genes=_gtf_for(sim, tmp_path / "g.gtf"), n_shared=2, n_rna_only=1, max_iter=20)
    cov = rna.uns["jmt"]["link_coverage"]
    linked = int((np.diff(sp.csr_matrix(sim.gene_activity).indptr) > 0).sum())
    assert cov["genes_linked"] == linked and cov == res.link_coverage
    assert fastjmt.pooled_scores(res, sim.rna_labels, sim.atac_labels)["ari_pooled"] > 0.9


def test_no_links_is_an_error_naming_both_inputs_names(sim, tmp_path):
    rna, atac = _ads(sim)
    atac.var_names = [f"chr9:{1000 * j}-{1000 * j + 500}" for j in range(atac.n_vars)]  # another contig
    with pytest.raises(ValueError, match=r"no link.*'g0'.*'Sym0'.*'chr9:0-500'"):
        _fit(rna, atac, genes=_gtf_for(sim, tmp_path / "g.gtf"), n_shared=2, n_rna_only=1, max_iter=5)


def test_duplicated_var_names_all_get_their_links(sim, tmp_path):
    rna, atac = _ads(sim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AnnData's own warning about non-unique names
        names = [f"Sym{i}" for i in range(rna.n_vars)]
        names[1] = "Sym0"
        rna.var_names = names
    from fastjmt.adata import _gene_activity

    A = sp.csr_matrix(_gene_activity(rna, atac, None, _gtf_for(sim, tmp_path / "g.gtf"), 2000, 0, 5000.0))
    assert A[1].nnz == A[0].nnz > 0 and (A[0] != A[1]).nnz == 0


def test_empty_cells_are_flagged_and_programs_written(sim):
    rna, atac = _ads(sim)
    X = rna.X.tolil()
    X[3, :] = 0
    rna.X = X.tocsr()
    res = _fit(rna, atac, gene_activity=sim.gene_activity, n_shared=2, n_rna_only=1, max_iter=20)
    assert rna.obs["jmt_empty"].tolist() == [i == 3 for i in range(rna.n_obs)]
    assert rna.obs["jmt_cluster"].isna().tolist() == [i == 3 for i in range(rna.n_obs)]
    np.testing.assert_array_equal(rna.obsm["X_jmt_programs"], res.programs_rna)
    np.testing.assert_array_equal(atac.obsm["X_jmt_programs"], res.programs_atac)
    assert not atac.obs["jmt_empty"].any()


def test_warnings_point_at_the_caller(sim):
    rna, atac = _ads(sim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_anndata(rna, atac, gene_activity=sim.gene_activity, n_shared=2, n_rna_only=1, max_iter=2)
    conv = [w for w in caught if issubclass(w.category, fastjmt.ConvergenceWarning)]
    assert conv and all(w.filename == __file__ for w in conv)


def test_nan_with_variable_gene_selection_is_refused(sim):
    rna, atac = _ads(sim)
    rna.X = rna.X.astype(np.float64)
    rna.X.data[0] = np.nan
    with pytest.raises(ValueError, match="rna contains NaN"):
        _fit(rna, atac, gene_activity=sim.gene_activity, n_shared=2, n_rna_only=1, n_top_genes=100, max_iter=2)

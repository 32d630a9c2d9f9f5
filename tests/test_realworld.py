"""Inputs shaped like the ones new users bring: degenerate matrices, one validation on every entry point,
data that is not what the defaults assume, warnings that point at the caller."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import fastjmt

pytestmark = pytest.mark.filterwarnings("ignore::fastjmt.api.ConvergenceWarning")


@pytest.fixture(scope="module")
def sim():
    return fastjmt.simulate(n_rna=300, n_atac=300, n_genes=150, n_regions=450, n_shared=2, separation=0.8,
                            random_state=0)


def _ads(d):
    anndata = pytest.importorskip("anndata")
    rna = anndata.AnnData(d.rna.copy())
    rna.var_names = [f"g{i}" for i in range(d.rna.shape[1])]
    atac = anndata.AnnData(d.atac.copy())
    atac.var_names = [f"chr1:{1000 * j}-{1000 * j + 500}" for j in range(d.atac.shape[1])]
    return rna, atac


# ---------------------------------------------------------------- 2. degenerate data

@pytest.mark.parametrize("which", ["rna", "atac"])
def test_a_matrix_without_any_nonzero_is_refused_naming_the_modality(sim, which):
    args = {"rna": sim.rna, "atac": sim.atac}
    args[which] = sp.csr_matrix(args[which].shape, dtype=np.float32)
    with pytest.raises(ValueError, match=f"^{which} has no nonzero value"):
        fastjmt.fit(args["rna"], args["atac"], sim.gene_activity, n_shared=2, max_iter=2)
    with pytest.raises(ValueError, match=f"^{which} has no nonzero value"):
        fastjmt.select_k(args["rna"], args["atac"], sim.gene_activity, k_values=[2, 3])


def test_a_cell_without_counts_gets_no_confident_membership_and_is_flagged(sim):
    rna = sim.rna.tolil()
    rna[5, :] = 0
    res = fastjmt.fit(rna.tocsr(), sim.atac, sim.gene_activity, n_shared=2, max_iter=20)
    assert res.empty_rna.dtype == bool and np.flatnonzero(res.empty_rna).tolist() == [5]
    assert not res.empty_atac.any()
    np.testing.assert_allclose(res.C_rna[5], 1.0 / res.K)  # uniform: no cluster is claimed
    assert res.C_rna[~res.empty_rna].max(axis=1).min() > 1.0 / res.K
    assert np.all(res.programs_rna[5] == 0)


# ---------------------------------------------------------------- 3. one validation on every entry point

def _entry_points(d):
    yield "fit", lambda rna, **kw: fastjmt.fit(rna, d.atac, d.gene_activity, n_shared=2, max_iter=2, **kw)
    yield "select_k", lambda rna, **kw: fastjmt.select_k(rna, d.atac, d.gene_activity, k_values=[2, 3], max_iter=2,
                                                         **kw)
    try:
        import anndata
    except ImportError:
        return
    from fastjmt.adata import fit_anndata

    def via_anndata(rna, **kw):
        a = anndata.AnnData(d.atac.copy())
        r = anndata.AnnData(rna)
        return fit_anndata(r, a, gene_activity=d.gene_activity, n_shared=2, max_iter=2, n_top_genes=100, **kw)

    yield "fit_anndata", via_anndata


@pytest.mark.parametrize("bad, match", [("nan", "rna contains NaN"), ("negative", "rna has negative values"),
                                        ("zero", "rna has no nonzero value")])
def test_every_entry_point_refuses_the_same_bad_input_with_the_same_error(sim, bad, match, monkeypatch,
                                                                          tmp_path_factory, capsys):
    rna = sim.rna.copy().astype(np.float64)
    if bad == "nan":
        rna.data[0] = np.nan
    elif bad == "negative":
        rna.data[0] = -1.0
    else:
        rna = sp.csr_matrix(rna.shape)
    before = rna.copy()
    from fastjmt import preprocess as pp

    def no_preprocessing(*a, **k):
        raise AssertionError("preprocessing ran before validation")

    monkeypatch.setattr(pp, "select_variable_genes", no_preprocessing)
    messages = {}
    for name, call in _entry_points(sim):
        with pytest.raises(ValueError, match=match) as err:
            call(rna)
        messages[name] = str(err.value)
    assert len(set(messages.values())) == 1, messages  # the same error, word for word
    import fastjmt.__main__ as cli

    d = tmp_path_factory.mktemp("cli")
    sp.save_npz(d / "rna.npz", sp.csr_matrix(rna))
    sp.save_npz(d / "atac.npz", sp.csr_matrix(sim.atac))
    sp.save_npz(d / "ga.npz", sp.csr_matrix(sim.gene_activity))
    capsys.readouterr()
    assert cli.main(["fit", "--rna", str(d / "rna.npz"), "--atac", str(d / "atac.npz"), "--gene-activity",
                     str(d / "ga.npz"), "--n-shared", "2", "--out", str(d / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fastjmt fit: error: " + " ".join(messages["fit"].split())
    assert (rna != before).nnz == 0 or bad == "nan"


def test_select_k_checks_k_values_against_the_subsample_before_fitting(sim, monkeypatch):
    import fastjmt.api

    calls = []
    monkeypatch.setattr(fastjmt.api, "fit", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"k_values \[6\] exceed the cells of a subsample.*5 RNA and 5 ATAC cells"):
        fastjmt.select_k(sim.rna[:6], sim.atac[:6], sim.gene_activity, k_values=[2, 6])
    assert calls == []


# ---------------------------------------------------------------- 4. data that is not what the defaults assume

def test_log_normalised_rna_with_preprocessing_warns(sim):
    from fastjmt import preprocess as pp

    logged = pp.normalize_log1p(sp.csr_matrix(sim.rna, dtype=np.float64))  # what scanpy leaves in .X
    with pytest.warns(UserWarning, match="does not look like raw counts.*log-transformed.*preprocess=False"):
        fastjmt.fit(logged, sim.atac, sim.gene_activity, n_shared=2, max_iter=2)
    with warnings.catch_warnings(record=True) as caught:  # select_k: once, at the caller's line
        warnings.simplefilter("always")
        fastjmt.select_k(logged, sim.atac, sim.gene_activity, k_values=[2, 3], n_seeds=2, max_iter=2)
    mine = [w for w in caught if "raw counts" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", category=fastjmt.ConvergenceWarning)
        fastjmt.fit(logged, sim.atac, sim.gene_activity, n_shared=2, max_iter=2, preprocess=False)
        fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=2, max_iter=2)  # counts: silent


def test_negative_values_without_preprocessing_give_finite_outputs_and_a_report(sim, tmp_path):
    from fastjmt import preprocess as pp

    G = pp.preprocess_rna(pp.to_csr(sim.rna))
    G.data -= G.data.mean()  # centred: many rows sum to <= 0
    assert (np.asarray(G.sum(axis=1)).ravel() <= 0).sum() > 50
    R = pp.preprocess_atac(pp.to_csr(sim.atac))
    A = pp.preprocess_gene_activity(pp.to_csr(sim.gene_activity))
    res = fastjmt.fit(G, R, A, n_shared=2, max_iter=20, preprocess=False)
    for name in ("programs_rna", "programs_atac", "C_rna", "C_atac", "loss_history"):
        assert np.all(np.isfinite(getattr(res, name))), name
    assert np.abs(res.programs_rna).max() <= 1.0 + 1e-6
    from fastjmt.report import write_report

    paths = write_report(res, tmp_path / "rep")
    assert (tmp_path / "rep" / "report.md").exists() and "report" in paths

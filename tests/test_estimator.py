"""The estimator (``fastjmt.JMT``), mapping new cells (``transform``), saving without pickle, and ``fastjmt.tl``."""

import json
import os
import warnings

import numpy as np
import pytest

import fastjmt
from fastjmt.options import DEFAULTS, FitOptions


@pytest.fixture(scope="module")
def unequal():
    """RNA three types, ATAC two, two shared (the paper's scenario 2 shape)."""
    return fastjmt.simulate(n_rna=500, n_atac=500, n_genes=250, n_regions=750, n_shared=2, n_rna_only=1,
                            random_state=3)


@pytest.fixture(scope="module")
def fitted(unequal):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fastjmt.JMT(n_shared=2, n_rna_only=1).fit(unequal.rna, unequal.atac, unequal.gene_activity)


def test_parameters_follow_scikit_learn_rules():
    est = fastjmt.JMT(n_shared=4, a3=2.0)
    params = est.get_params()
    assert set(params) == set(FitOptions.names())  # every option of fastjmt.fit, no other
    assert params["n_shared"] == 4 and params["a3"] == 2.0 and params["a4"] == DEFAULTS.a4
    assert est.set_params(max_iter=7, resolution=None) is est and est.max_iter == 7 and est.resolution is None
    with pytest.raises(ValueError, match="invalid parameter 'n_clusters'"):
        est.set_params(n_clusters=3)
    bad = fastjmt.JMT(n_shared=2, learning_rate=-1.0)  # stored as given: checked when fit runs
    assert bad.learning_rate == -1.0
    with pytest.raises(ValueError, match="learning_rate"):
        bad.fit(np.ones((3, 2)), np.ones((3, 2)), np.ones((2, 2)))
    assert repr(fastjmt.JMT(n_shared=3)) == "JMT(n_shared=3)"


def test_scikit_learn_checks_that_apply():
    """scikit-learn's own checks of the parameter protocol.

    Not run: every check that calls ``fit(X, y)`` with one matrix (``check_estimator``'s fit, transform,
    pickling and dtype checks): ``JMT.fit`` takes three matrices (RNA, ATAC, gene activity), which
    scikit-learn's generated data cannot provide; and ``check_valid_tag_types``, which needs
    ``__sklearn_tags__`` returning scikit-learn's own ``Tags`` class (fastjmt does not depend on
    scikit-learn).
    """
    checks = pytest.importorskip("sklearn.utils.estimator_checks")
    from sklearn.base import clone

    for name in ("check_parameters_default_constructible", "check_no_attributes_set_in_init",
                 "check_get_params_invariance", "check_set_params", "check_estimator_repr",
                 "check_estimator_cloneable", "check_do_not_raise_errors_in_init_or_set_params"):
        getattr(checks, name)("JMT", fastjmt.JMT(n_shared=3))
    c = clone(fastjmt.JMT(n_shared=3, a3=5.0))
    assert c.get_params()["a3"] == 5.0 and not hasattr(c, "result_")


def test_fit_returns_self_and_equals_the_function(unequal, fitted):
    res = fastjmt.fit(unequal.rna, unequal.atac, unequal.gene_activity, n_shared=2, n_rna_only=1)
    assert isinstance(fitted, fastjmt.JMT)
    for name in ("C_rna", "C_atac", "C_genes", "S_atac", "loss_history"):
        np.testing.assert_array_equal(getattr(fitted, name + "_"), getattr(res, name))
    np.testing.assert_array_equal(fitted.labels_rna_, res.labels_rna)
    assert fitted.n_iter_ == res.n_iter and fitted.n_features_rna_ == unequal.rna.shape[1]
    assert fastjmt.adjusted_rand_index(unequal.rna_labels, fitted.labels_rna_) > 0.99


def test_transform_of_the_training_cells_reproduces_their_memberships(unequal, fitted):
    out = fitted.transform(rna=unequal.rna, atac=unequal.atac)
    assert set(out) == {"rna", "atac"}
    for name in ("rna", "atac"):
        C = getattr(fitted, f"C_{name}_")
        assert out[name]["C"].shape == C.shape and out[name]["C"].dtype == C.dtype
        assert np.mean(out[name]["columns"] == C.argmax(1)) == 1.0
        assert np.abs(out[name]["C"] - C).max() < 0.02, name
        np.testing.assert_allclose(out[name]["programs"], getattr(fitted, f"programs_{name}_"), rtol=1e-4,
                                   atol=1e-6)
    only_rna = fitted.transform(rna=unequal.rna[:40])
    assert set(only_rna) == {"rna"} and only_rna["rna"]["C"].shape == (40, 3)


def test_new_cells_of_a_private_type_land_in_its_columns(unequal, fitted):
    """Held-out cells: a model fitted on 80 % of each modality maps the other 20 %; RNA cells of the RNA-only
    type go to the RNA-only column, no ATAC cell does."""
    rng = np.random.default_rng(0)
    tr = {m: rng.permutation(n) < int(0.8 * n) for m, n in (("rna", 500), ("atac", 500))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        model = fastjmt.JMT(n_shared=2, n_rna_only=1).fit(unequal.rna[tr["rna"]], unequal.atac[tr["atac"]],
                                                          unequal.gene_activity)
    out = model.transform(rna=unequal.rna[~tr["rna"]], atac=unequal.atac[~tr["atac"]])
    assert np.all(out["atac"]["columns"] < 2)  # column 2 is RNA-only
    truth = np.asarray(unequal.rna_labels)[~tr["rna"]]
    private = np.setdiff1d(np.unique(unequal.rna_labels), np.unique(unequal.atac_labels))
    assert private.size == 1
    assert np.all(out["rna"]["columns"][truth == private[0]] == 2)
    for name, lab in (("rna", unequal.rna_labels), ("atac", unequal.atac_labels)):
        held = np.asarray(lab)[~tr[name]]
        assert fastjmt.adjusted_rand_index(held, out[name]["labels"]) > 0.95, name


def test_transform_errors(unequal, fitted):
    with pytest.raises(RuntimeError, match="not fitted"):
        fastjmt.JMT(n_shared=2).transform(rna=unequal.rna)
    with pytest.raises(ValueError, match="pass rna=, atac= or both"):
        fitted.transform()
    with pytest.raises(ValueError, match="features"):
        fitted.transform(rna=unequal.rna[:, :10])
    rna = unequal.rna[:20].copy()
    before = rna.toarray()
    fitted.transform(rna=rna)
    np.testing.assert_array_equal(rna.toarray(), before)  # the caller's matrix is not modified


def test_save_and_load_without_pickle(tmp_path, unequal, fitted):
    path = tmp_path / "model"
    fitted.save(path)
    assert sorted(os.listdir(path)) == ["params.json", "result.npz"]
    with np.load(path / "result.npz", allow_pickle=False) as z:  # plain arrays only
        assert "C_rna" in z.files
    meta = json.loads((path / "params.json").read_text())
    assert meta["format"] == "fastjmt-model-1" and meta["params"]["n_shared"] == 2
    loaded = fastjmt.JMT.load(path)
    assert loaded.get_params()["n_rna_only"] == 1
    np.testing.assert_array_equal(loaded.C_genes_, fitted.C_genes_)
    a = fitted.transform(atac=unequal.atac[:50])["atac"]["C"]
    b = loaded.transform(atac=unequal.atac[:50])["atac"]["C"]
    np.testing.assert_array_equal(a, b)
    (path / "params.json").write_text(json.dumps({"format": "other", "params": {}}))
    with pytest.raises(ValueError, match="format"):
        fastjmt.JMT.load(path)


def _named_adatas(d):
    """RNA and ATAC AnnData of a simulation, with gene names and chr:start-end region names."""
    ad = pytest.importorskip("anndata")
    rna, atac = ad.AnnData(d.rna.tocsr()), ad.AnnData(d.atac.tocsr())
    rna.var_names = [f"g{i}" for i in range(rna.n_vars)]
    atac.var_names = [f"chr1:{100 * i}-{100 * i + 50}" for i in range(atac.n_vars)]
    return rna, atac


def test_tl_functions_write_under_key_added(unequal):
    rna, atac = _named_adatas(unequal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        out = fastjmt.tl.jmt((rna, atac), n_shared=2, n_rna_only=1, gene_activity=unequal.gene_activity,
                             key_added="j", copy=True)
    assert "j" not in rna.uns and "j" not in rna.obsm  # copy=True leaves the inputs alone
    r, a = out
    for x in (r, a):
        assert {"j", "j_programs"} <= set(x.obsm) and "j" in x.varm and "j" in x.uns
        assert x.obs["j_cluster"].dtype.name == "category"
    assert fastjmt.adjusted_rand_index(unequal.rna_labels, r.obs["j_cluster"].astype(str)) > 0.99
    new_rna, new_atac = r[:60].copy(), a[:60].copy()
    for x in (new_rna, new_atac):
        for k in ("j", "j_programs"):
            del x.obsm[k]
    assert fastjmt.tl.jmt_transform((new_rna, new_atac), (r, a), key="j", key_added="m") is None
    np.testing.assert_array_equal(np.asarray(new_rna.obs["m_cluster"]), np.asarray(r.obs["j_cluster"])[:60])
    np.testing.assert_array_equal(np.asarray(new_atac.obs["m_cluster"]), np.asarray(a.obs["j_cluster"])[:60])
    with pytest.raises(KeyError, match="no fastjmt fit"):
        fastjmt.tl.jmt_transform(new_rna, (r, a), key="other")


def test_new_cells_without_counts_get_no_call(fitted):
    import scipy.sparse as sp

    out = fitted.transform(rna=sp.csr_matrix((3, fitted.n_features_rna_)))["rna"]
    assert out["empty"].all() and (out["labels"] == -1).all() and (out["columns"] == -1).all()
    np.testing.assert_allclose(out["C"], 1.0 / 3)


def test_programs_of_training_cells_equal_the_fit_s_without_preprocessing(unequal):
    """With preprocess=False and negative values (z-scored data), transform's program activities are the fit's."""
    X = np.log1p(unequal.rna.toarray())
    Z = (X - X.mean(0)) / np.maximum(X.std(0), 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        model = fastjmt.JMT(n_shared=2, n_rna_only=1, preprocess=False, max_iter=20).fit(
            Z, unequal.atac.toarray().astype(float), unequal.gene_activity)
    out = model.transform(rna=Z[:100])["rna"]
    np.testing.assert_allclose(out["programs"], model.programs_rna_[:100], rtol=1e-4, atol=1e-5)
    assert np.abs(out["programs"]).max() <= 1 + 1e-6


def test_save_keeps_numpy_scalar_parameters(tmp_path, unequal):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        m = fastjmt.JMT(n_shared=np.int64(2), n_rna_only=np.int64(1), max_iter=np.int64(15)).fit(
            unequal.rna, unequal.atac, unequal.gene_activity)
    m.save(tmp_path / "m")
    loaded = fastjmt.JMT.load(tmp_path / "m")
    assert loaded.get_params()["n_shared"] == 2 and loaded.get_params()["max_iter"] == 15
    (tmp_path / "m" / "params.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a fastjmt model"):
        fastjmt.JMT.load(tmp_path / "m")
    (tmp_path / "m" / "params.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a fastjmt model"):
        fastjmt.JMT.load(tmp_path / "m")


def test_scikit_learn_helpers_see_fitted_state(fitted):
    validation = pytest.importorskip("sklearn.utils.validation")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        validation.check_is_fitted(fastjmt.JMT(n_shared=2))
    validation.check_is_fitted(fitted)
    from sklearn.utils.estimator_checks import check_valid_tag_types

    check_valid_tag_types("JMT", fastjmt.JMT(n_shared=2))


def test_label_tol_is_a_share():
    with pytest.raises(ValueError, match="label_tol is a share"):
        fastjmt.fit(np.ones((3, 2)), np.ones((3, 2)), np.ones((2, 2)), n_shared=2, label_tol=2)


def test_tl_transform_with_a_reference_cut_to_its_fitted_genes(unequal):
    rna, atac = _named_adatas(unequal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        fastjmt.tl.jmt((rna, atac), n_shared=2, n_rna_only=1, gene_activity=unequal.gene_activity,
                       n_top_genes=150)
    cut = rna[:, np.asarray(rna.uns["jmt"]["genes_fitted"])].copy()  # scanpy habit: keep the fitted genes
    import scipy.sparse as sp

    new = rna[:30].copy()
    new.X = sp.vstack([sp.csr_matrix((1, rna.n_vars)), new.X[1:]]).tocsr()  # one cell without counts
    fastjmt.tl.jmt_transform(new, (cut, atac), key_added="m")
    assert new.obs["m_empty"].iloc[0] and new.obs["m_cluster"].isna().iloc[0]
    np.testing.assert_array_equal(np.asarray(new.obs["m_cluster"])[1:], np.asarray(rna.obs["jmt_cluster"])[1:30])

"""Mosaic fits (:func:`fastjmt.fit_mosaic`): the objective's blocks against the dense reference and finite
differences, the gradients the epoch applies, the two-matrix fit as its special case, private columns, inputs."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_csr

import fastjmt
import reference as ref
from fastjmt import driver
from fastjmt import objective as obj
from fastjmt.problem import Block, BlockFactors, Cells, Features, Mosaic, MosaicParams, modality, softmax, transpose

WEIGHTS = dict(a1=3.0, a2=2.0, a3=1.5, a4=2.5, a5=4.0, a6=0.3)


def mosaic_case(seed=0, K=4, n_shared=2):
    """A paired batch, an RNA-only batch with one private column, an ATAC-only batch with one (float64)."""
    rng = np.random.default_rng(seed)
    n_genes, n_regions = 7, 9
    sizes = {"atac_only": ("atac", 12), "paired": ("both", 10), "rna_only": ("rna", 11)}
    private_cols = {"rna_only": [2], "atac_only": [3]}
    data, blocks, batches = {}, [], {}
    for k, (kind, n) in sizes.items():
        masked = np.array([c for o, cols in private_cols.items() if o != k for c in cols], dtype=np.int64)
        batches[k] = (n, masked)
        for m in ("atac", "rna"):
            if kind in (m, "both"):
                X = random_csr(rng, n, n_genes if m == "rna" else n_regions, 0.4, np.float64, np.int32)
                name = k if kind != "both" else f"{k}:{m}"
                data[name] = X
                blocks.append(Block(name, k, m, modality(X, WEIGHTS["a1" if m == "atac" else "a2"], masked)))
    A = random_csr(rng, n_genes, n_regions, 0.3, np.float64, np.int32)
    At = transpose(A)
    mosaic = Mosaic(blocks, batches, (A.indptr, A.indices, A.data), (At.indptr, At.indices, At.data), n_genes,
                    n_regions, K, WEIGHTS["a3"], WEIGHTS["a4"], WEIGHTS["a5"], WEIGHTS["a6"], np.dtype(np.float64))
    theta = {"Z_" + k: rng.normal(size=(n, K)) for k, (n, _) in batches.items()}
    theta.update({"Zf_rna": rng.normal(size=(n_genes, K)), "Zf_atac": rng.normal(size=(n_regions, K)),
                  "c_rna": rng.normal(size=n_genes) * 0.1, "c_atac": rng.normal(size=n_regions) * 0.1})
    for b in blocks:
        theta["S_" + b.name] = rng.normal(size=(K, K))
        theta["b_" + b.name] = rng.normal(size=b.data.n) * 0.1
    return mosaic, data, A, theta


def params_of(mosaic, theta):
    return MosaicParams(
        {k: Cells(theta["Z_" + k].copy(), softmax(theta["Z_" + k])) for k in mosaic.batches},
        {m: Features(theta["Zf_" + m].copy(), softmax(theta["Zf_" + m]), theta["c_" + m].copy())
         for m in ("rna", "atac")},
        {b.name: BlockFactors(theta["S_" + b.name].copy(), theta["b_" + b.name].copy()) for b in mosaic.blocks})


def theta_of(mosaic, mp):
    th = {"Z_" + k: mp.cells[k].Z.copy() for k in mosaic.batches}
    th.update({"Zf_" + m: mp.features[m].Zf.copy() for m in ("rna", "atac")})
    th.update({"c_" + m: mp.features[m].c.copy() for m in ("rna", "atac")})
    for b in mosaic.blocks:
        th["S_" + b.name], th["b_" + b.name] = mp.blocks[b.name].S.copy(), mp.blocks[b.name].b.copy()
    return th


def ref_args(mosaic, data, A):
    return ([(b.name, b.batch, b.modality, data[b.name].toarray()) for b in mosaic.blocks],
            {k: masked for k, (_, masked) in mosaic.batches.items()}, A.toarray())


def test_mosaic_terms_and_gradients_match_the_dense_reference():
    mosaic, data, A, theta = mosaic_case(1)
    blocks, batches, Ad = ref_args(mosaic, data, A)
    terms, grads = obj.evaluate_mosaic(mosaic, params_of(mosaic, theta))
    expect = ref.mosaic_loss_terms(blocks, batches, Ad, theta, WEIGHTS)
    for k, v in expect.items():
        assert terms[k] == pytest.approx(v, rel=1e-10, abs=1e-12), k
    eg = ref.mosaic_gradients(blocks, batches, Ad, theta, WEIGHTS)
    assert sorted(grads) == sorted(eg)
    for k in eg:
        np.testing.assert_allclose(grads[k], eg[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_mosaic_reference_gradients_match_central_differences():
    mosaic, data, A, theta = mosaic_case(2)
    blocks, batches, Ad = ref_args(mosaic, data, A)
    g = ref.mosaic_gradients(blocks, batches, Ad, theta, WEIGHTS)
    rng = np.random.default_rng(0)
    for key in g:
        d = rng.normal(size=theta[key].shape)
        h = 1e-6
        vals = []
        for s in (h, -h):
            th = dict(theta)
            th[key] = theta[key] + s * d
            vals.append(ref.mosaic_loss_terms(blocks, batches, Ad, th, WEIGHTS)["total"])
        fd = (vals[0] - vals[1]) / (2 * h)
        assert fd == pytest.approx(np.sum(g[key] * d), rel=1e-6, abs=1e-8), key


class Recorder:
    """In the optimiser's place: records every step's gradient, steps by plain descent."""

    def __init__(self, lr, on_step):
        self.lr, self.on_step, self.seen = lr, on_step, []

    def logits(self, key, Z, rows, C, grad):
        g = obj.run_logit_kernel(grad, C, Z, Z, Z, rows, obj.GRADIENT)
        self.on_step(key, g)
        self.seen.append(key)
        Z[rows] -= self.lr * g
        return softmax(Z[rows])

    def __call__(self, key, P, G, rows):
        self.on_step(key, np.asarray(G))
        self.seen.append(key)
        P[rows] -= self.lr * G[rows]


def test_every_step_of_a_mosaic_epoch_applies_the_dense_reference_gradient():
    """The paired batch's shared memberships, each block's S, the shared feature clusters: at the point the
    epoch steps each block, its gradient equals the dense reference's."""
    mosaic, data, A, theta = mosaic_case(3)
    blocks, batches, Ad = ref_args(mosaic, data, A)
    mp = params_of(mosaic, theta)

    def on_step(key, g):
        expect = ref.mosaic_gradients(blocks, batches, Ad, theta_of(mosaic, mp), WEIGHTS)[key]
        np.testing.assert_allclose(g, expect, rtol=1e-9, atol=1e-12, err_msg=key)

    rec = Recorder(0.05, on_step)
    before = theta_of(mosaic, mp)
    driver.block_epoch(mosaic, mp, driver.Schedule(), rec, np.random.default_rng(0), 1)
    keys = ["Z_" + k for k in mosaic.batches] + ["S_" + b.name for b in mosaic.blocks] + ["Zf_atac", "Zf_rna"]
    assert sorted(rec.seen) == sorted(keys)
    after = theta_of(mosaic, mp)
    assert not np.array_equal(before["Z_paired"], after["Z_paired"])


def test_feature_bias_is_the_minimiser_over_every_block():
    mosaic, data, A, theta = mosaic_case(4)
    mp = params_of(mosaic, theta)
    for m in ("rna", "atac"):
        parts = [(b.data, obj.side_stats(obj.cell_factor(mp.cells[b.batch].C, mp.blocks[b.name].S),
                                         mp.blocks[b.name].b)) for b in mosaic.blocks_of_modality(m)]
        mp.features[m].c[:] = obj.feature_bias(parts, mp.features[m].Cf)
    base = obj.evaluate_mosaic(mosaic, mp, with_grad=False)[0]["total"]
    rng = np.random.default_rng(0)
    for m in ("rna", "atac"):
        c = mp.features[m].c
        d = rng.normal(size=c.shape)
        vals = []
        for s in (1e-4, -1e-4):
            c += s * d
            vals.append(obj.evaluate_mosaic(mosaic, mp, with_grad=False)[0]["total"])
            c -= s * d
        assert abs(vals[0] - vals[1]) / 2e-4 < 1e-6 * max(1, abs(base)), m
        assert min(vals) > base, m


@pytest.fixture(scope="module")
def unequal():
    return fastjmt.simulate(n_rna=240, n_atac=200, n_genes=120, n_regions=300, n_shared=2, n_rna_only=1,
                            random_state=3)


@pytest.mark.parametrize("kw", [{}, dict(batch_cells=0.5, batch_features=0.5, max_iter=8), dict(low_memory=True)])
def test_two_batch_mosaic_is_the_two_matrix_fit(unequal, kw):
    """One RNA batch and one ATAC batch: the same start, epochs and answer as fastjmt.fit, bitwise."""
    d = unequal
    kw = dict(random_state=0, n_threads=1, **kw)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=2, n_rna_only=1, **kw)
        b = fastjmt.fit_mosaic({"R": {"rna": d.rna}, "A": {"atac": d.atac}}, d.gene_activity, n_shared=2,
                               private={"R": 1}, **kw)
    pairs = [(a.C_rna, b.memberships["R"]), (a.C_atac, b.memberships["A"]), (a.C_genes, b.C_genes),
             (a.C_regions, b.C_regions), (a.S_rna, b.S["R"]["rna"]), (a.S_atac, b.S["A"]["atac"]),
             (a.b_rna, b.b["R"]["rna"]), (a.b_regions, b.b_regions), (a.loss_history, b.loss_history),
             (a.labels_rna, b.labels["R"]), (a.labels_atac, b.labels["A"]), (a.programs_atac, b.programs["A"]["atac"])]
    for i, (x, y) in enumerate(pairs):
        assert np.array_equal(x, y), i
    assert a.n_iter == b.n_iter and a.stop_reason == b.stop_reason


def test_private_columns_and_paired_cells():
    """A paired batch with a private type and an ATAC-only batch with one: every type found, no cell of
    another batch in a private column, labels comparable across batches."""
    d = fastjmt.simulate_mosaic(n_cells=200, n_genes=150, n_regions=400, n_shared=3,
                                private={"multiome": 1, "atac": 1}, random_state=1)
    r = fastjmt.fit_mosaic(d.batches, d.gene_activity, n_shared=3, private=d.private, random_state=0, n_threads=1)
    assert r.converged and r.batches == ["multiome", "rna", "atac"]
    ari = fastjmt.adjusted_rand_index
    for k in r.batches:
        assert ari(d.labels[k], r.labels[k]) > 0.95, k
    pooled = ari(np.concatenate([d.labels[k] for k in r.batches]), np.concatenate([r.labels[k] for k in r.batches]))
    assert pooled > 0.95
    cols = r.columns
    assert not np.isin(cols["rna"], [3, 4]).any() and not np.isin(cols["atac"], [3]).any()
    assert not np.isin(cols["multiome"], [4]).any()
    assert r.memberships["multiome"].shape == (200, 5) and set(r.programs["multiome"]) == {"rna", "atac"}
    assert r.relabel(None).labels["rna"].max() < 5


def test_bad_inputs_name_the_argument():
    d = fastjmt.simulate(n_rna=40, n_atac=40, n_genes=30, n_regions=50, random_state=0)
    A = d.gene_activity
    with pytest.raises(TypeError, match="batches must be"):
        fastjmt.fit_mosaic([d.rna], A, n_shared=2)
    with pytest.raises(ValueError, match="gene_activity has no nonzero link"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}}, sp.csr_matrix(A.shape), n_shared=2)
    with pytest.raises(ValueError, match=r"looks transposed: pass gene_activity.T"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}}, A.T, n_shared=2)
    with pytest.raises(ValueError, match="lower the cluster counts"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}}, A, n_shared=41)
    with pytest.raises(ValueError, match="no ATAC block"):
        fastjmt.fit_mosaic({"a": {"rna": d.rna}}, A, n_shared=2)
    with pytest.raises(ValueError, match=r"batches\['p'\] pairs 40 RNA cells with 39"):
        fastjmt.fit_mosaic({"p": {"rna": d.rna, "atac": d.atac[:39]}}, A, n_shared=2)
    with pytest.raises(ValueError, match=r"batches\['a'\]\['atac'\] has 30 columns"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.rna}}, A, n_shared=2)
    with pytest.raises(ValueError, match="private names batches that are not in batches"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}}, A, n_shared=2, private={"x": 1})
    with pytest.raises(TypeError, match="does not take persist"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}}, A, n_shared=2, persist=True)
    with pytest.raises(TypeError, match="unexpected option 'n_sharde'"):
        fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}}, A, n_shared=2, n_sharde=3)
    with pytest.raises(ValueError, match=r"dict with \"rna\" and/or \"atac\""):
        fastjmt.fit_mosaic({"r": {"RNA": d.rna}, "a": {"atac": d.atac}}, A, n_shared=2)
    before = d.rna.copy()
    fastjmt.fit_mosaic({"r": {"rna": d.rna}, "a": {"atac": d.atac}, "r2": {"rna": d.rna}}, A, n_shared=2,
                       max_iter=2, random_state=0, n_threads=1)
    assert (d.rna != before).nnz == 0  # the caller's matrices are not modified


def test_simulated_mosaic_layout():
    d = fastjmt.simulate_mosaic({"p": "paired", "r": "rna", "a": "atac"}, n_cells={"p": 30, "r": 20, "a": 25},
                                n_genes=40, n_regions=60, n_shared=2, private={"r": 1}, batch_effect=0.3)
    assert set(d.batches["p"]) == {"rna", "atac"} and d.batches["p"]["rna"].shape[0] == 30
    assert d.batches["a"]["atac"].shape == (25, 60) and d.batches["r"]["rna"].shape == (20, 40)
    assert "type_2" in set(d.labels["r"]) and "type_2" not in set(d.labels["p"]) | set(d.labels["a"])
    with pytest.raises(ValueError, match="design"):
        fastjmt.simulate_mosaic({"x": "both"})


def test_mosaic_from_anndata_with_a_batch_column():
    """RNA and ATAC AnnData with a batch column; the paired batch's ATAC cells in another order than its RNA:
    matched by obs_names, results written per cell, labels the same as the matrix call's."""
    ad = pytest.importorskip("anndata")
    import fastjmt.adata

    d = fastjmt.simulate_mosaic(n_cells=120, n_genes=100, n_regions=300, n_shared=3, random_state=2)
    names = {k: np.array([f"{k}-{i}" for i in range(d.labels[k].size)]) for k in d.batches}
    rna = ad.AnnData(sp.vstack([d.batches["multiome"]["rna"], d.batches["rna"]["rna"]], format="csr"))
    rna.obs_names = np.r_[names["multiome"], names["rna"]]
    rna.obs["batch"] = ["multiome"] * 120 + ["rna"] * 120
    flip = np.arange(120)[::-1]  # the paired cells' ATAC rows in reverse order
    atac = ad.AnnData(sp.vstack([d.batches["atac"]["atac"], d.batches["multiome"]["atac"][flip]], format="csr"))
    atac.obs_names = np.r_[names["atac"], names["multiome"][flip]]
    atac.obs["batch"] = ["atac"] * 120 + ["multiome"] * 120
    res = fastjmt.adata.fit_mosaic_anndata(rna, atac, batch_key="batch", n_shared=3, gene_activity=d.gene_activity,
                                           random_state=0, n_threads=1)
    direct = fastjmt.fit_mosaic(d.batches, d.gene_activity, n_shared=3, random_state=0, n_threads=1)
    assert sorted(res.batches) == sorted(direct.batches)
    for k in res.batches:
        assert fastjmt.adjusted_rand_index(res.labels[k], direct.labels[k]) == pytest.approx(1.0)
    assert rna.obsm["X_jmt"].shape == (240, 3) and atac.obsm["X_jmt_programs"].shape == (240, 3)
    # a paired cell has one cluster in both objects
    cl_rna = dict(zip(rna.obs_names, rna.obs["jmt_cluster"]))
    cl_atac = dict(zip(atac.obs_names, atac.obs["jmt_cluster"]))
    assert all(cl_rna[n] == cl_atac[n] for n in names["multiome"])
    written = np.asarray(atac.obs["jmt_cluster"].astype(str))[:120]  # the ATAC-only batch's rows
    assert fastjmt.adjusted_rand_index(written, direct.labels["atac"]) == pytest.approx(1.0)
    assert atac.uns["jmt"]["batches"] == res.batches and rna.varm["jmt_C"].shape == (100, 3)
    bad = atac.copy()
    bad.obs_names = np.r_[names["atac"], [f"x{i}" for i in range(120)]]
    with pytest.raises(ValueError, match=r"batch 'multiome' is in both rna \(120 cells\) and atac \(120 cells\) but "
                                         r"its cells differ \(120 only"):
        fastjmt.adata.fit_mosaic_anndata(rna, bad, batch_key="batch", n_shared=3, gene_activity=d.gene_activity)
    with pytest.raises(KeyError, match="batch_key"):
        fastjmt.adata.fit_mosaic_anndata(rna, atac, batch_key="sample", n_shared=3, gene_activity=d.gene_activity)
    assert not rna.obs["jmt_empty"].any() and rna.obs["jmt_empty"].dtype == bool
    dup = rna.copy()  # a repeated RNA name in the paired batch would pair one ATAC cell twice
    dup.obs_names = np.r_[names["multiome"][:1], names["multiome"][:119], names["rna"]]
    with pytest.raises(ValueError, match="rna.obs_names repeat"):
        fastjmt.adata.fit_mosaic_anndata(dup, atac, batch_key="batch", n_shared=3, gene_activity=d.gene_activity)
    nan = rna.copy()
    nan.obs["batch"] = nan.obs["batch"].astype(object)
    nan.obs.iloc[3, nan.obs.columns.get_loc("batch")] = None
    with pytest.raises(ValueError, match="missing for 1 cells"):
        fastjmt.adata.fit_mosaic_anndata(nan, atac, batch_key="batch", n_shared=3, gene_activity=d.gene_activity)
    renamed = atac.copy()  # the paired batch spelt differently in the ATAC object: warned, fitted as two batches
    renamed.obs["batch"] = ["atac"] * 120 + ["Multiome"] * 120
    with pytest.warns(UserWarning, match="share 120 cell names"):
        fastjmt.adata.fit_mosaic_anndata(rna, renamed, batch_key="batch", n_shared=3, gene_activity=d.gene_activity,
                                         max_iter=2, random_state=0, n_threads=1)


def test_mosaic_from_a_mudata_with_the_batch_column_in_its_obs():
    """muon's layout: one MuData, the batch column in mdata.obs only; paired cells share obs_names."""
    ad = pytest.importorskip("anndata")
    md = pytest.importorskip("mudata")
    import fastjmt.adata

    d = fastjmt.simulate_mosaic(n_cells=100, n_genes=80, n_regions=240, n_shared=3, random_state=4)
    names = {k: [f"{k}-{i}" for i in range(100)] for k in d.batches}
    rna = ad.AnnData(sp.vstack([d.batches["multiome"]["rna"], d.batches["rna"]["rna"]], format="csr"))
    rna.obs_names = names["multiome"] + names["rna"]
    atac = ad.AnnData(sp.vstack([d.batches["multiome"]["atac"], d.batches["atac"]["atac"]], format="csr"))
    atac.obs_names = names["multiome"] + names["atac"]
    mdata = md.MuData({"rna": rna, "atac": atac})
    batch = {n: k for k in names for n in names[k]}
    mdata.obs["batch"] = [batch[n] for n in mdata.obs_names]
    res = fastjmt.adata.fit_mosaic_anndata(mdata, batch_key="batch", n_shared=3, gene_activity=d.gene_activity,
                                           random_state=0, n_threads=1)
    assert sorted(res.batches) == ["atac", "multiome", "rna"]
    assert res.memberships["multiome"].shape == (100, 3)
    assert mdata.mod["atac"].obsm["X_jmt"].shape == (200, 3)


def test_tl_jmt_mosaic_writes_under_key_added_and_copies():
    ad = pytest.importorskip("anndata")
    import fastjmt.tl

    d = fastjmt.simulate_mosaic({"m": "paired", "a": "atac"}, n_cells=90, n_genes=80, n_regions=240, n_shared=3,
                                random_state=6)
    rna = ad.AnnData(d.batches["m"]["rna"].tocsr())
    rna.obs_names = [f"m{i}" for i in range(90)]
    rna.obs["batch"] = "m"
    atac = ad.AnnData(sp.vstack([d.batches["m"]["atac"], d.batches["a"]["atac"]], format="csr"))
    atac.obs_names = [f"m{i}" for i in range(90)] + [f"a{i}" for i in range(90)]
    atac.obs["batch"] = ["m"] * 90 + ["a"] * 90
    out = fastjmt.tl.jmt_mosaic((rna, atac), batch_key="batch", n_shared=3, key_added="mo", copy=True,
                                gene_activity=d.gene_activity, random_state=0, n_threads=1)
    assert "mo" not in rna.obsm and "mo" not in atac.obsm  # copy=True leaves the inputs alone
    r2, a2 = out
    assert r2.obsm["mo"].shape == (90, 3) and a2.obsm["mo_programs"].shape == (180, 3)
    assert a2.varm["mo"].shape == (240, 3) and "mo_cluster" in a2.obs and a2.uns["mo"]["batches"]
    cl = dict(zip(a2.obs_names, a2.obs["mo_cluster"]))
    assert all(cl[n] == c for n, c in zip(r2.obs_names, r2.obs["mo_cluster"]))


def _mosaic_fit(d, **kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastjmt.fit_mosaic(d.batches, d.gene_activity, n_shared=d.n_shared, private=d.private,
                                  **dict(dict(max_iter=20, tol=0.0, n_init=2, random_state=5, dtype=np.float64,
                                              batch_cells=0.7, n_threads=1), **kw))


@pytest.mark.parametrize("stop_at", [12, 20 + 8])  # inside the first restart / inside the second
def test_mosaic_checkpoint_resume_equals_the_uninterrupted_fit(tmp_path, stop_at):
    """A paired batch, private columns, mini-batches and two restarts: cut by the callback after a checkpoint,
    resumed from it, the same factors, losses and labels as one straight fit; other data is refused."""
    d = fastjmt.simulate_mosaic(n_cells=80, n_genes=60, n_regions=150, n_shared=2, private={"rna": 1},
                                random_state=3)
    straight = _mosaic_fit(d)
    path = tmp_path / "mosaic.npz"
    count = []

    def stop(it, terms, params):
        count.append(it)
        return len(count) == stop_at

    cut = _mosaic_fit(d, checkpoint=path, checkpoint_every=5, callback=stop)
    assert cut.n_iter < 20 or cut.restart_losses.size == 2
    resumed = _mosaic_fit(d, resume=path)
    for k in straight.batches:
        np.testing.assert_array_equal(resumed.memberships[k], straight.memberships[k])
        for m in straight.S[k]:
            np.testing.assert_array_equal(resumed.S[k][m], straight.S[k][m])
    np.testing.assert_array_equal(resumed.C_regions, straight.C_regions)
    np.testing.assert_array_equal(resumed.loss_history, straight.loss_history)
    np.testing.assert_array_equal(resumed.restart_losses, straight.restart_losses)
    other = fastjmt.simulate_mosaic(n_cells=80, n_genes=60, n_regions=150, n_shared=2, private={"rna": 1},
                                    random_state=4)
    with pytest.raises(fastjmt.CheckpointError, match="other data or options"):
        _mosaic_fit(other, resume=path)


def test_mosaic_estimator_follows_the_function():
    d = fastjmt.simulate_mosaic(n_cells=90, n_genes=80, n_regions=240, n_shared=3, private={"atac": 1},
                                random_state=8)
    est = fastjmt.JMTMosaic(n_shared=3, private={"atac": 1}, random_state=0, n_threads=1)
    assert est.get_params()["private"] == {"atac": 1} and est.get_params()["max_iter"] == 300
    assert est.set_params(max_iter=200) is est and est.max_iter == 200
    with pytest.raises(ValueError, match="invalid parameter 'n_rna_only'"):
        est.set_params(n_rna_only=1)
    with pytest.raises(TypeError, match="unexpected parameter 'client'"):
        fastjmt.JMTMosaic(n_shared=3, client=None)
    assert not est.__sklearn_is_fitted__()
    assert est.fit(d.batches, d.gene_activity) is est
    direct = fastjmt.fit_mosaic(d.batches, d.gene_activity, n_shared=3, private={"atac": 1}, random_state=0,
                                n_threads=1, max_iter=200)
    for k in direct.batches:
        np.testing.assert_array_equal(est.labels_[k], direct.labels[k])
        np.testing.assert_array_equal(est.memberships_[k], direct.memberships[k])
    assert est.batches_ == direct.batches and est.C_regions_.shape == (240, 4)
    clone = est.__sklearn_clone__()
    assert clone.get_params() == est.get_params() and not clone.__sklearn_is_fitted__()
    assert "private={'atac': 1}" in repr(est)

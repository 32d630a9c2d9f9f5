"""fastjmt.fit end to end: results, conventions, determinism, threads, inputs left alone, the block steps."""

import logging
import warnings

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import params_from_theta, random_case

import fastjmt
from fastjmt import driver
from fastjmt.objective import evaluate
from fastjmt.problem import MODALITIES, Batch, MosaicParams


@pytest.fixture(scope="module")
def small():
    return fastjmt.simulate(n_rna=300, n_atac=250, n_genes=120, n_regions=300, random_state=1)


def _fit(d, **kw):
    kw.setdefault("n_shared", 5)
    kw.setdefault("max_iter", 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fastjmt.fit(d.rna, d.atac, d.gene_activity, **kw)


def test_result_has_everything_with_right_shapes(small):
    r = _fit(small, n_shared=4, n_rna_only=1)
    K = 5
    assert r.C_rna.shape == (300, K) and r.C_atac.shape == (250, K)
    assert r.C_genes.shape == (120, K) and r.C_regions.shape == (300, K)
    assert r.S_rna.shape == (K, K) and r.S_atac.shape == (K, K)
    assert r.b_rna.shape == (300,) and r.b_atac.shape == (250,)
    assert r.b_genes.shape == (120,) and r.b_regions.shape == (300,)
    for C in (r.C_rna, r.C_atac, r.C_genes, r.C_regions):
        assert np.all(C >= 0)
        np.testing.assert_allclose(C.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(r.columns_rna, r.C_rna.argmax(1))
    np.testing.assert_array_equal(r.columns_atac, r.C_atac.argmax(1))
    np.testing.assert_array_equal(r.labels_genes, r.C_genes.argmax(1))
    # the labels are the columns merged: a map from the K columns, shared clusters first, private columns alone
    assert r.column_clusters.shape == (K,) and r.resolution == 1.0
    np.testing.assert_array_equal(r.labels_rna, r.column_clusters[r.columns_rna])
    np.testing.assert_array_equal(r.labels_atac, r.column_clusters[r.columns_atac])
    assert r.column_clusters[0] == 0 and r.column_clusters[4] not in r.column_clusters[:4]
    assert r.n_clusters == r.column_clusters.max() + 1
    assert r.loss_history.shape == (r.n_iter + 1, len(r.loss_terms))
    assert r.loss_terms[-1] == "total" and r.loss == r.loss_history[-1, -1]
    assert np.all(np.isfinite(r.loss_history))
    assert r.restart_losses.shape == (1,)
    assert set(r.to_dict()) >= {"C_rna", "labels_atac", "loss_history", "seed"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(small, dtype):
    r = _fit(small, dtype=dtype, max_iter=3)
    for a in (r.C_rna, r.C_atac, r.C_genes, r.C_regions, r.S_rna, r.S_atac, r.b_rna, r.b_regions):
        assert a.dtype == dtype


def test_inputs_are_not_modified(small):
    rna = sp.coo_matrix(small.rna)
    atac = small.atac.tocsc()
    ga = small.gene_activity.copy()
    ga.indptr = ga.indptr.astype(np.int64)
    ga.indices = ga.indices.astype(np.int64)
    before = [m.copy() for m in (rna, atac, ga)]
    _fit(small.__class__(rna, atac, ga, small.rna_labels, small.atac_labels, 5, 0, 0), max_iter=3)
    for b, a in zip(before, (rna, atac, ga)):
        assert type(a) is type(b) and a.dtype == b.dtype
        assert (abs(a - b)).nnz == 0
    assert ga.indices.dtype == np.int64


def test_sparse_formats_and_dense_agree(small):
    ref = _fit(small, max_iter=5, dtype=np.float64)
    for conv in (sp.csc_matrix, sp.coo_matrix, lambda m: m.toarray(), sp.csr_array):
        d = small.__class__(conv(small.rna), conv(small.atac), conv(small.gene_activity), small.rna_labels,
                            small.atac_labels, 5, 0, 0)
        r = _fit(d, max_iter=5, dtype=np.float64)
        np.testing.assert_allclose(r.C_rna, ref.C_rna, rtol=1e-10, atol=1e-12)
        assert r.loss == pytest.approx(ref.loss, rel=1e-10)


def test_same_seed_same_result_and_seed_reruns_kept_restart(small):
    a = _fit(small, random_state=3, n_init=3, max_iter=10)
    b = _fit(small, random_state=3, n_init=3, max_iter=10)
    np.testing.assert_array_equal(a.C_rna, b.C_rna)
    np.testing.assert_array_equal(a.loss_history, b.loss_history)
    assert a.restart_losses.shape == (3,) and a.loss == a.restart_losses.min()
    again = _fit(small, random_state=a.seed, n_init=1, max_iter=10)
    np.testing.assert_array_equal(again.C_atac, a.C_atac)
    c = _fit(small, random_state=4, max_iter=10, init="random")
    assert not np.array_equal(c.C_rna, a.C_rna)


def test_gradient_descent_loss_never_rises(small):
    r = _fit(small, optimizer="gd", learning_rate=1e-3, max_iter=25, tol=0.0, init="random", backtrack=False)
    total = r.loss_history[:, -1]
    assert total[-1] < total[0]
    assert np.all(np.diff(total) <= 1e-9 * np.abs(total[:-1]))


@pytest.mark.parametrize("learning_rate", [0.3, 1.0, 1e3])
def test_backtracking_keeps_the_loss_from_rising(small, learning_rate):
    """Adam's loss rises in some epochs; with ``backtrack`` (the default) those epochs are undone."""
    plain = _fit(small, learning_rate=learning_rate, max_iter=60, tol=0.0, backtrack=False)
    assert np.any(np.diff(plain.loss_history[:, -1]) > 0)  # the case exists on this data
    r = _fit(small, learning_rate=learning_rate, max_iter=60, tol=0.0)
    total = r.loss_history[:, -1]
    assert r.n_iter == 60 and total.shape == (61,)
    assert np.all(np.diff(total) <= 0)
    assert np.any(np.diff(total) == 0)  # undone epochs repeat the loss before them
    assert 0 < r.n_undone <= np.count_nonzero(np.diff(total) == 0) and plain.n_undone == 0
    assert total[-1] < total[0]
    if learning_rate > 1.0:  # far too large a step: plain Adam ends above where it started, backtracking recovers
        assert plain.loss_history[-1, -1] > total[-1]


def test_backtracking_stops_when_no_step_lowers_the_loss():
    """An undone epoch halves the step; once it is below ``min_step · learning_rate`` the fit has converged."""
    c = random_case(seed=5, n_atac=40, n_rna=30, n_genes=12, n_regions=20, layout=(2, 1, 1))
    sched = driver.Schedule(learning_rate=1e6, min_step=1e-2, tol=0.0, max_iter=50)
    out = driver.run_once(c["problem"], sched, 2, 1, 1, seed=0)
    total = out.history[:, -1]
    assert out.converged and out.n_iter == 7 and out.undone == 7  # 1e6 · 0.5**7 < 1e6 · 1e-2: seven undone epochs
    assert np.all(total == total[0])


def test_every_block_step_lowers_the_loss():
    """Each block step of the driver (small gradient step) and each closed-form bias update lowers the loss."""
    c = random_case(seed=11, n_atac=40, n_rna=30, n_genes=12, n_regions=20, layout=(2, 1, 1))
    prob = c["problem"]
    params = params_from_theta(c["theta"])
    sched = driver.Schedule(optimizer="gd", learning_rate=1e-4)
    step = driver._Stepper(sched, params)

    def loss():
        return evaluate(prob, params, with_grad=False)[0]["total"]

    mosaic, mp = prob.as_mosaic(), MosaicParams.of_factors(params)
    eps = {b.name: driver._Epoch(b, Batch.whole(b.data.n, b.data.p)) for b in mosaic.blocks}
    last = loss()
    for name in mosaic.batches:  # ATAC, then RNA
        driver._cell_and_S_step(mosaic, mp, name, eps, step, 1)
        now = loss()
        assert now < last, name
        last = now
    for name in MODALITIES:
        driver._feature_step(mosaic, mp, name, eps, step, 1)
        now = loss()
        assert now < last, name
        last = now


def test_minibatches_run_and_lower_the_loss(small):
    r = _fit(small, batch_cells=0.3, batch_features=0.5, max_iter=20, init="random", learning_rate=0.02)
    assert np.all(np.isfinite(r.loss_history))
    assert r.loss_history[-1, -1] < r.loss_history[0, -1]


def test_callback_sees_every_epoch_and_can_stop(small):
    seen = []

    def cb(it, terms, params):
        seen.append((it, terms["total"]))
        return it == 4

    r = _fit(small, callback=cb, max_iter=50)
    assert [s[0] for s in seen] == [1, 2, 3, 4] and r.n_iter == 4
    assert seen[-1][1] == pytest.approx(r.loss)


def test_convergence_warning_and_convergence(small):
    with pytest.warns(fastjmt.ConvergenceWarning):
        fastjmt.fit(small.rna, small.atac, small.gene_activity, n_shared=5, max_iter=2)
    r = _fit(small, max_iter=2000, tol=1e-3, patience=2)
    assert r.converged and r.n_iter < 2000


def test_nan_is_reported_with_block_and_iteration(small):
    with pytest.raises(fastjmt.NonFiniteError, match=r"block \w+ at iteration \d+|iteration \d+"):
        _fit(small, optimizer="gd", learning_rate=1e200, max_iter=5, dtype=np.float32)


def test_thread_settings_restored(small):
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _fit(small, n_threads=-1, max_iter=2)
        assert numba.get_num_threads() == 1

        def boom(*_):
            raise RuntimeError("stop")

        with pytest.raises(RuntimeError):
            _fit(small, n_threads=numba.config.NUMBA_NUM_THREADS, callback=boom)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


def test_thread_count_does_not_change_the_result(small):
    one = _fit(small, n_threads=1, max_iter=8, dtype=np.float64)
    many = _fit(small, n_threads=-1, max_iter=8, dtype=np.float64)
    np.testing.assert_allclose(one.C_rna, many.C_rna, rtol=1e-9, atol=1e-12)


def test_verbose_logs_progress(small, caplog):
    with caplog.at_level(logging.INFO, logger="fastjmt"):
        _fit(small, verbose=1, max_iter=10)
    text = caplog.text
    assert "iter    1" in text and "iter   10" in text and "restart 1/1" in text


def test_all_zero_rows_and_columns_are_fine(small):
    rna = small.rna.tolil()
    rna[3, :] = 0
    rna[:, 7] = 0
    r = _fit(small.__class__(rna.tocsr(), small.atac, small.gene_activity, None, None, 5, 0, 0), max_iter=5)
    assert np.all(np.isfinite(r.C_rna)) and np.all(np.isfinite(r.loss_history))


def test_preprocess_off_uses_data_as_given(small):
    from fastjmt import preprocess as pp

    G = pp.preprocess_rna(pp.to_csr(small.rna))
    R = pp.preprocess_atac(pp.to_csr(small.atac))
    A = pp.preprocess_gene_activity(pp.to_csr(small.gene_activity))
    a = _fit(small, max_iter=5, dtype=np.float64)
    b = _fit(small.__class__(G, R, A, None, None, 5, 0, 0), max_iter=5, dtype=np.float64, preprocess=False)
    np.testing.assert_allclose(a.C_rna, b.C_rna, rtol=1e-9, atol=1e-12)


def test_blas_limit_is_restored_after_fit(small):
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before, "no BLAS library found to check"
        seen = []
        _fit(small, max_iter=3, callback=lambda *a: seen.append(blas_threads()))
        assert all(t == 1 for s in seen for t in s)
        assert blas_threads() == before


@pytest.mark.filterwarnings("ignore::fastjmt.api.ConvergenceWarning")
def test_concurrent_fits_from_python_threads_match_sequential(small):
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    blas_before = [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]
    seeds = [0, 1, 2]
    sequential = [_fit(small, random_state=s, max_iter=6) for s in seeds]
    with ThreadPoolExecutor(3) as ex:
        parallel = list(ex.map(lambda s: _fit(small, random_state=s, max_iter=6), seeds))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a.C_rna, b.C_rna)
        np.testing.assert_array_equal(a.loss_history, b.loss_history)
    assert [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"] == blas_before


def test_save_and_load_round_trip(small, tmp_path):
    r = _fit(small, max_iter=4)
    path = tmp_path / "res.npz"
    r.save(path)
    back = fastjmt.load_result(path)
    for k in r.__dataclass_fields__:
        a, b = getattr(r, k), getattr(back, k)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        else:
            assert a == b, k
    np.testing.assert_array_equal(back.labels_rna, r.labels_rna)
    np.testing.assert_array_equal(back.column_clusters, r.column_clusters)
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert "C_rna" in z.files


def test_verbose_two_logs_every_epoch_and_bar_is_optional(small, caplog):
    from fastjmt.progress import Progress

    with caplog.at_level(logging.INFO, logger="fastjmt"):
        _fit(small, verbose=2, max_iter=3)
    assert all(f"iter    {i}" in caplog.text for i in (1, 2, 3))
    pytest.importorskip("tqdm")
    bar = Progress(1, 5, bar=True)
    bar.update(1, {"total": 1.0}, 0.1)
    assert bar.bar.n == 1
    bar.close()


@pytest.mark.parametrize("batch", [1.0, 0.5])
def test_low_memory_mode_matches_default(small, batch):
    a = _fit(small, max_iter=10, dtype=np.float64, batch_cells=batch, batch_features=batch)
    b = _fit(small, max_iter=10, dtype=np.float64, batch_cells=batch, batch_features=batch, low_memory=True)
    np.testing.assert_allclose(b.C_rna, a.C_rna, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b.loss_history, a.loss_history, rtol=1e-9)



def test_labels_merge_a_type_split_over_columns_and_relabel_changes_only_the_merge():
    # 3 types fitted with K = 5 columns: argmax splits types, the merged labels recover them
    d = fastjmt.simulate(n_rna=400, n_atac=400, n_genes=200, n_regions=600, n_shared=3, random_state=4)
    r = _fit(d, n_shared=5, max_iter=20)
    cols = fastjmt.integration_scores(d.rna_labels, d.atac_labels, r.columns_rna, r.columns_atac)
    lab = fastjmt.integration_scores(d.rna_labels, d.atac_labels, r.labels_rna, r.labels_atac)
    assert r.n_clusters < 5 and lab["ari_pooled"] > cols["ari_pooled"] + 0.1, (cols, lab)
    assert lab["ari_pooled"] > 0.9
    # no merge: the labels are the columns; another resolution: same factors, other map
    none = _fit(d, n_shared=5, max_iter=20, resolution=None)
    assert none.column_clusters is None and none.n_clusters == 5
    np.testing.assert_array_equal(none.labels_rna, none.columns_rna)
    np.testing.assert_array_equal(none.C_rna, r.C_rna)
    back = r.relabel(resolution=None)  # undo the merge after the fit
    assert back.column_clusters is None and back.resolution is None
    np.testing.assert_array_equal(back.labels_rna, r.columns_rna)
    coarse = r.relabel(resolution=0.05)
    assert coarse.C_rna is r.C_rna and coarse.resolution == 0.05 and coarse.n_clusters <= r.n_clusters
    with pytest.raises(ValueError, match="resolution"):
        _fit(d, n_shared=5, max_iter=1, resolution=-1.0)

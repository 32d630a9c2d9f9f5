"""The fit on Dask arrays (fastjmt.dask_driver): equal to the in-memory fit, independent of the chunking, survives
a killed worker, clear errors for inputs it cannot take. One 2-process LocalCluster for the module."""

import os
import signal

import numpy as np
import pytest
import scipy.sparse as sp

import fastjmt
from fastjmt import checkpoint as ckpt

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings("ignore::fastjmt.ConvergenceWarning")  # short fits, compared epoch by epoch

KW = dict(n_shared=3, random_state=0, dtype="float64", n_threads=1)


@pytest.fixture(scope="module")
def sim():
    return fastjmt.simulate(n_rna=300, n_atac=360, n_genes=150, n_regions=450, n_shared=3, random_state=0)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def chunked(X, rows):
    return da.from_array(X, chunks=(rows, -1), asarray=False)


@pytest.fixture(scope="module")
def reference(sim):
    return fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, max_iter=4, **KW)


def assert_same_fit(ref, res, atol, loss_rtol=1e-9):
    assert res.n_iter == ref.n_iter
    for key in ("C_rna", "C_atac", "C_genes", "C_regions", "S_rna", "S_atac", "b_rna", "b_atac", "b_genes",
                "b_regions", "programs_rna", "programs_atac"):
        np.testing.assert_allclose(np.asarray(getattr(res, key)), getattr(ref, key), atol=atol, rtol=0, err_msg=key)
    np.testing.assert_allclose(res.loss_history, ref.loss_history, rtol=loss_rtol)
    np.testing.assert_array_equal(np.asarray(res.labels_rna), ref.labels_rna)
    np.testing.assert_array_equal(np.asarray(res.labels_atac), ref.labels_atac)
    np.testing.assert_array_equal(np.asarray(res.labels_genes), ref.labels_genes)


def test_dask_fit_equals_the_in_memory_fit(sim, client, reference):
    res = fastjmt.fit(chunked(sim.rna, 110), chunked(sim.atac, 100), sim.gene_activity, client=client, max_iter=4,
                      **KW)
    assert isinstance(res.C_rna, da.Array)  # the caller's cluster: per-cell outputs stay on it
    assert_same_fit(reference, res, 1e-10)


def test_chunk_size_and_persist_do_not_change_the_result(sim, client, reference):
    res = fastjmt.fit(chunked(sim.rna, 300), chunked(sim.atac, 37), sim.gene_activity, client=client, max_iter=4,
                      persist=True, **KW)
    assert_same_fit(reference, res, 1e-10)


def test_dense_chunks_and_float32(sim, client):
    ref = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, max_iter=4, **dict(KW, dtype="float32"))
    res = fastjmt.fit(da.from_array(sim.rna.toarray(), chunks=(128, -1)), chunked(sim.atac, 90), sim.gene_activity,
                      client=client, max_iter=4, **dict(KW, dtype="float32"))
    assert res.C_genes.dtype == np.float32
    assert_same_fit(ref, res, 1e-4, loss_rtol=1e-5)


def test_a_worker_killed_during_the_fit_costs_a_retry_not_the_fit(sim, client, reference):
    pids = client.run(os.getpid)
    killed = []

    def kill_one(it, terms, params):
        if it == 3 and not killed:
            addr = sorted(pids)[0]
            os.kill(pids[addr], signal.SIGKILL)
            killed.append(addr)

    res = fastjmt.fit(chunked(sim.rna, 110), chunked(sim.atac, 100), sim.gene_activity, client=client, max_iter=4,
                      callback=kill_one, **KW)
    assert killed
    assert_same_fit(reference, res, 1e-10)
    client.wait_for_workers(2, timeout=60)


def test_out_writes_the_per_cell_results_to_zarr(sim, client, reference, tmp_path):
    pytest.importorskip("zarr")
    store = tmp_path / "cells.zarr"
    res = fastjmt.fit(chunked(sim.rna, 110), chunked(sim.atac, 100), sim.gene_activity, client=client, max_iter=4,
                      out=store, **KW)
    assert store.exists()
    back = da.from_zarr(str(store), component="C_atac").compute()
    np.testing.assert_allclose(back, reference.C_atac, atol=1e-10)
    np.testing.assert_allclose(np.asarray(res.programs_rna), reference.programs_rna, atol=1e-10)


def test_bad_dask_inputs_get_errors_naming_the_argument(sim, client):
    coo = chunked(sim.rna, 100).map_blocks(sp.coo_matrix)
    with pytest.raises(TypeError, match="rna: a chunk is scipy.sparse COO"):
        fastjmt.fit(coo, chunked(sim.atac, 100), sim.gene_activity, client=client, **KW)
    by_columns = da.from_array(sim.atac, chunks=(100, 200), asarray=False)
    with pytest.raises(ValueError, match=r"atac is chunked along its features.*rechunk\(\{1: -1\}\)"):
        fastjmt.fit(chunked(sim.rna, 100), by_columns, sim.gene_activity, client=client, **KW)
    with pytest.raises(TypeError, match="atac: when one modality is a Dask array the other must be one too"):
        fastjmt.fit(chunked(sim.rna, 100), sim.atac, sim.gene_activity, client=client, **KW)
    with pytest.raises(ValueError, match="client= applies to Dask inputs only"):
        fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, client=client, **KW)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        fastjmt.fit(chunked(sim.rna, 100), chunked(sim.atac, 100), sim.gene_activity, client="tcp://x", **KW)


def test_a_lazily_read_anndata_is_fitted_on_dask(sim, client, reference, tmp_path):
    anndata = pytest.importorskip("anndata")
    h5py = pytest.importorskip("h5py")
    from anndata.experimental import read_elem_lazy

    from fastjmt.adata import fit_anndata

    paths = {}
    for name, X in (("rna", sim.rna), ("atac", sim.atac)):
        paths[name] = tmp_path / f"{name}.h5ad"
        anndata.AnnData(X=X).write_h5ad(paths[name])
    with h5py.File(paths["rna"], "r") as fr, h5py.File(paths["atac"], "r") as fa:
        rna = anndata.AnnData(X=read_elem_lazy(fr["X"], chunks=(120, sim.rna.shape[1])))
        atac = anndata.AnnData(X=read_elem_lazy(fa["X"], chunks=(100, sim.atac.shape[1])))
        res = fit_anndata(rna, atac, gene_activity=sim.gene_activity, client=client, max_iter=4, **KW)
        assert_same_fit(reference, res, 1e-10)
        np.testing.assert_allclose(np.asarray(rna.obsm["X_jmt"]), reference.C_rna, atol=1e-10)


def _running_clients():
    return {id(c) for c in distributed.client._global_clients.values() if c.status == "running"}


def test_without_a_client_the_fit_starts_and_closes_its_own_cluster(sim, reference):
    before = _running_clients()
    res = fastjmt.fit(chunked(sim.rna, 150), chunked(sim.atac, 180), sim.gene_activity, max_iter=4, **KW)
    assert isinstance(res.C_rna, np.ndarray) and isinstance(res.empty_atac, np.ndarray)  # gathered before closing
    assert_same_fit(reference, res, 1e-10)
    assert _running_clients() <= before  # the fit's own client and cluster are closed


def test_the_estimator_fits_dask_arrays(sim, client, reference):
    model = fastjmt.JMT(client=client, max_iter=4, **KW).fit(chunked(sim.rna, 110), chunked(sim.atac, 100),
                                                             sim.gene_activity)
    np.testing.assert_allclose(model.C_genes_, reference.C_genes, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(model.labels_atac_), reference.labels_atac)


def test_checkpoint_and_resume_on_dask(sim, client, tmp_path):
    path = tmp_path / "fit.ckpt"
    args = (chunked(sim.rna, 110), chunked(sim.atac, 100), sim.gene_activity)
    full = fastjmt.fit(*args, client=client, max_iter=6, **KW)
    first = fastjmt.fit(*args, client=client, max_iter=6, checkpoint=path, checkpoint_every=2,
                        callback=lambda it, terms, params: it >= 3, **KW)
    assert first.n_iter == 3 and ckpt.read_meta(path)["current"]["it"] == 3  # written where the callback stopped
    cells = list((tmp_path / "fit.ckpt.cells").iterdir())
    assert len(cells) == 1  # only the folder the checkpoint names is kept
    resumed = fastjmt.fit(*args, client=client, max_iter=6, checkpoint=path, resume=path, **KW)
    assert resumed.n_iter == full.n_iter
    np.testing.assert_allclose(resumed.loss_history, full.loss_history, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(resumed.C_rna), np.asarray(full.C_rna), atol=1e-12)
    with pytest.raises(fastjmt.CheckpointError, match="made for other data or options"):
        fastjmt.fit(chunked(sim.rna, 150), *args[1:], client=client, max_iter=6, resume=path, **KW)
    with pytest.raises(fastjmt.CheckpointError, match="differs in: .*row_chunks"):  # an in-memory fit's checkpoint
        mem = tmp_path / "mem.ckpt"
        fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, max_iter=2, checkpoint=mem, **KW)
        fastjmt.fit(*args, client=client, max_iter=3, resume=mem, **KW)


def test_ctrl_c_finishes_the_epoch_and_writes_the_checkpoint_on_dask(sim, client, tmp_path):
    path = tmp_path / "fit.ckpt"

    def press_ctrl_c(it, terms, params):
        if it == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.warns(UserWarning, match="interrupted"):
        res = fastjmt.fit(chunked(sim.rna, 110), chunked(sim.atac, 100), sim.gene_activity, client=client,
                          max_iter=8, checkpoint=path, callback=press_ctrl_c, **KW)
    assert res.interrupted and res.n_iter == 3
    assert ckpt.read_meta(path)["current"]["it"] == 3


def test_mini_batches_on_dask(sim, client):
    """Feature batches are drawn as in memory (so the fit equals the in-memory one); cell batches are whole
    row chunks: reproducible for a seed, and the loss goes down."""
    opts = dict(KW, max_iter=5, batch_features=0.5)
    ref = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, **opts)
    res = fastjmt.fit(chunked(sim.rna, 110), chunked(sim.atac, 100), sim.gene_activity, client=client, **opts)
    assert_same_fit(ref, res, 1e-10)
    opts = dict(KW, max_iter=5, batch_cells=0.5, backtrack=False)
    runs = [fastjmt.fit(chunked(sim.rna, 60), chunked(sim.atac, 60), sim.gene_activity, client=client, **opts)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].loss_history, runs[1].loss_history)
    assert runs[0].loss_history[-1, -1] < runs[0].loss_history[0, -1]


def test_bad_values_and_paths_are_caught_before_the_fit(sim, client, tmp_path):
    rna = sim.rna.astype(np.float64)
    rna.data[3] = np.nan
    with pytest.raises(ValueError, match="rna contains NaN or infinite values"):
        fastjmt.fit(chunked(rna, 100), chunked(sim.atac, 100), sim.gene_activity, client=client, **KW)
    empty = sp.csr_matrix(sim.rna.shape)
    with pytest.raises(ValueError, match="rna has no nonzero value"):
        fastjmt.fit(chunked(empty, 100), chunked(sim.atac, 100), sim.gene_activity, client=client, **KW)
    with pytest.raises(ValueError, match="gene_activity has no nonzero"):
        fastjmt.fit(chunked(sim.rna, 100), chunked(sim.atac, 100), sp.csr_matrix(sim.gene_activity.shape),
                    client=client, **KW)
    few = chunked(sim.rna, 100)[np.arange(sim.rna.shape[0]) < 2]  # unknown chunk sizes: counted on the chunks
    with pytest.raises(ValueError, match="rna has 2 cells, fewer than the 3 clusters"):
        fastjmt.fit(few, chunked(sim.atac, 100), sim.gene_activity, client=client, **KW)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="out: .* is a file"):
        fastjmt.fit(chunked(sim.rna, 100), chunked(sim.atac, 100), sim.gene_activity, client=client, out=a_file,
                    **KW)
    with pytest.raises(TypeError, match="gene_activity must be in memory"):
        fastjmt.fit(chunked(sim.rna, 100), chunked(sim.atac, 100), da.from_array(sim.gene_activity.toarray()),
                    client=client, **KW)


def test_results_with_dask_arrays_save_and_the_estimator_clones(sim, client, tmp_path):
    res = fastjmt.fit(chunked(sim.rna, 150), chunked(sim.atac, 180), sim.gene_activity, client=client, max_iter=2,
                      **KW)
    res.save(tmp_path / "r.npz")
    back = fastjmt.load_result(tmp_path / "r.npz")
    np.testing.assert_array_equal(back.C_rna, np.asarray(res.C_rna))
    pytest.importorskip("matplotlib")
    from fastjmt.report import write_report

    paths = write_report(res, tmp_path / "report")
    assert os.path.exists(paths["result"])
    pytest.importorskip("sklearn")
    import pickle

    from sklearn.base import clone

    model = fastjmt.JMT(n_shared=3, client=client, max_iter=2)
    assert clone(model).client is client
    assert pickle.loads(pickle.dumps(model)).client is None
    with pytest.raises(TypeError, match="Dask array, which this function takes in memory only"):
        fastjmt.JMT(n_shared=3, max_iter=2).fit(sim.rna, sim.atac, sim.gene_activity).transform(
            rna=chunked(sim.rna, 100))

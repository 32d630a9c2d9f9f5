"""Checkpoints: atomic writes, resume equals an uninterrupted fit, Ctrl-C keeps the state, a kill mid-write is
harmless."""

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import fastjmt
from fastjmt import checkpoint as ckpt

OPTS = dict(n_shared=3, n_rna_only=1, max_iter=25, tol=0.0, n_init=2, random_state=7, dtype=np.float64,
            batch_cells=0.7)  # mini-batches: the generator's state must be restored too


def _data():
    return fastjmt.simulate(n_rna=150, n_atac=140, n_genes=60, n_regions=150, n_shared=3, n_rna_only=1,
                            random_state=2)


@pytest.fixture(scope="module")
def data():
    return _data()


def _fit(d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        return fastjmt.fit(d.rna, d.atac, d.gene_activity, **dict(OPTS, **kw))


@pytest.fixture(scope="module")
def reference(data):
    return _fit(data)


def _same(a, b):
    for name in ("C_rna", "C_atac", "C_genes", "C_regions", "S_rna", "S_atac", "b_rna", "b_regions", "loss_history",
                 "restart_losses"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.n_iter, a.n_undone, a.seed, a.converged) == (b.n_iter, b.n_undone, b.seed, b.converged)


def _stop_after(total_epochs):
    count = []

    def cb(it, terms, params):
        count.append(it)
        return len(count) == total_epochs

    return cb


@pytest.mark.parametrize("stop_at", [12, 25 + 13])  # inside the first restart / inside the second
def test_resume_equals_uninterrupted_fit(data, reference, tmp_path, stop_at):
    path = tmp_path / "fit.npz"
    cut = _fit(data, checkpoint=path, checkpoint_every=5, callback=_stop_after(stop_at))
    assert cut.n_iter < 25 or cut.restart_losses.size == 2
    meta = ckpt.read_meta(path)
    assert meta["restart"] == (0 if stop_at < 25 else 1)
    resumed = _fit(data, resume=path)
    _same(resumed, reference)


def test_resume_keeps_the_shrunk_step_of_backtracking(data, tmp_path):
    """A checkpoint written after an undone epoch stores the lowered step; resuming goes on with it."""
    opts = dict(learning_rate=1.0, n_init=1, max_iter=30)
    ref = _fit(data, **opts)
    undone = np.flatnonzero(np.diff(ref.loss_history[:, -1]) == 0) + 1  # epochs that were undone
    assert undone.size and undone[0] < 29
    cut_at = max(2, int(undone[0]) + 1)  # a checkpoint one epoch after the first undone one
    path = tmp_path / "fit.npz"
    _fit(data, checkpoint=path, checkpoint_every=cut_at, callback=_stop_after(cut_at + 1), **opts)
    current = ckpt.read_meta(path)["current"]  # written where the callback stopped the fit
    assert current["it"] == cut_at + 1 and current["undone"] >= 1 and current["lr"] < 1.0
    _same(_fit(data, resume=path, **opts), ref)


def test_ctrl_c_returns_state_and_saves_a_resumable_checkpoint(data, reference, tmp_path):
    path = tmp_path / "fit.npz"

    def press_ctrl_c(it, terms, params):
        if it == 7:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN in a shell's background job
    with pytest.warns(UserWarning, match="interrupted"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
            res = fastjmt.fit(data.rna, data.atac, data.gene_activity, checkpoint=path, checkpoint_every=0,
                              callback=press_ctrl_c, **OPTS)
    assert res.interrupted and res.n_iter == 7
    assert np.all(np.isfinite(res.C_rna)) and np.allclose(res.C_rna.sum(1), 1)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    assert ckpt.read_meta(path)["current"]["it"] == 7
    _same(_fit(data, resume=path), reference)


def test_resume_refuses_other_data_or_options(data, tmp_path):
    path = tmp_path / "fit.npz"
    _fit(data, checkpoint=path, max_iter=3)
    with pytest.raises(ckpt.CheckpointError, match="weights"):
        _fit(data, resume=path, a3=2.0)
    with pytest.raises(ckpt.CheckpointError, match="seeds"):
        _fit(data, resume=path, random_state=8)
    other = _data()
    other.rna.data[:5] += 1
    with pytest.raises(ckpt.CheckpointError, match="sums"):
        _fit(other, resume=path)
    with pytest.raises(FileNotFoundError, match="resume"):
        _fit(data, resume=tmp_path / "missing.npz")


def test_resume_of_a_finished_fit_returns_it(data, reference, tmp_path):
    path = tmp_path / "fit.npz"
    _same(_fit(data, checkpoint=path, checkpoint_every=0), reference)
    _same(_fit(data, resume=path), reference)


def test_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"x": 1}, {"a": np.arange(3)})

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(path, {"x": 2}, {"a": np.arange(5)})
    meta, arrays = ckpt.load(path)
    assert meta["x"] == 1 and arrays["a"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load(bad)


_CHILD = """
import sys, warnings, numpy as np
sys.path.insert(0, {tests!r})
import test_checkpoint as t
warnings.simplefilter("ignore")
d = t._data()
import fastjmt
fastjmt.fit(d.rna, d.atac, d.gene_activity, checkpoint={path!r}, checkpoint_every=1,
            **dict(t.OPTS, max_iter=100000, tol=0.0, n_init=1))
"""


def test_process_killed_mid_fit_leaves_a_loadable_checkpoint(data, tmp_path):
    path = str(tmp_path / "fit.npz")
    code = _CHILD.format(tests=os.path.dirname(__file__), path=path)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        while not os.path.exists(path) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert os.path.exists(path), "the child wrote no checkpoint"
        time.sleep(0.37)  # a checkpoint is written every epoch: the kill lands at an arbitrary point
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    meta, arrays = ckpt.load(path)  # intact, whatever the kill interrupted
    it = meta["current"]["it"]
    assert it >= 1
    # resuming it for a few more epochs equals the same fit run straight through to that point
    more = _fit(data, n_init=1, max_iter=it + 3, resume=path)
    straight = _fit(data, n_init=1, max_iter=it + 3)
    np.testing.assert_array_equal(more.C_rna, straight.C_rna)
    np.testing.assert_array_equal(more.loss_history, straight.loss_history)


@pytest.mark.parametrize("stop_at", [10, 8])  # on a checkpoint epoch / between two, with none written before
def test_a_callback_stop_is_resumable_wherever_it_falls(data, reference, tmp_path, stop_at):
    """The callback's stop writes the checkpoint of that epoch; resuming goes on to the same end as one fit."""
    path = tmp_path / "fit.npz"
    _fit(data, checkpoint=path, checkpoint_every=10, callback=_stop_after(stop_at))
    assert ckpt.read_meta(path)["current"]["it"] == stop_at
    _same(_fit(data, resume=path), reference)


def test_resume_refuses_the_same_cells_in_another_order(data, tmp_path):
    """Sums and nonzeros cannot tell reordered rows or features apart; the checkpoint's digest does."""
    path = tmp_path / "fit.npz"
    _fit(data, checkpoint=path, checkpoint_every=5, callback=_stop_after(6))
    order = np.random.default_rng(0).permutation(data.atac.shape[0])
    with pytest.raises(fastjmt.CheckpointError, match="digest"):
        fastjmt.fit(data.rna, data.atac[order], data.gene_activity, **dict(OPTS, resume=path))
    ga = data.gene_activity.tocsr(copy=True)  # one link moved to another region: same shape, nonzeros and sums
    ga.indices[0] = (ga.indices[0] + 1) % ga.shape[1]
    ga.sort_indices()
    with pytest.raises(fastjmt.CheckpointError, match="digest"):
        fastjmt.fit(data.rna, data.atac, ga, **dict(OPTS, resume=path))
    with pytest.raises(fastjmt.CheckpointError, match="written by fastjmt.fit; resume it with fastjmt.fit"):
        fastjmt.fit_mosaic({"rna": {"rna": data.rna}, "atac": {"atac": data.atac}}, data.gene_activity, n_shared=3,
                           private={"rna": 1}, resume=path)

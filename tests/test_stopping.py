"""The stopping rules: ``stop="answer"`` (the default) and ``stop="loss"``."""

import warnings

import numpy as np
import pytest
from conftest import random_case

import fastjmt
from fastjmt import driver
from fastjmt.problem import Factors


@pytest.fixture(scope="module")
def sim():
    return fastjmt.simulate(n_rna=400, n_atac=400, n_genes=200, n_regions=600, random_state=0)


def _params(rng, n=(50, 40), p=(30, 60), K=4):
    """Random factors for both modalities (only C, Cf and S matter to the rule)."""
    out = {}
    for m, nc, nf in (("rna", n[0], p[0]), ("atac", n[1], p[1])):
        C = rng.dirichlet(np.ones(K), nc)
        Cf = rng.dirichlet(np.ones(K), nf)
        out[m] = Factors(np.log(C), C, np.log(Cf), Cf, rng.normal(size=(K, K)) + 3 * np.eye(K), np.zeros(nc),
                         np.zeros(nf))
    return out


def _state(params, loss=1.0, sched=None):
    sched = sched or driver.Schedule(step_decay=1.0)
    st = driver.RunState(0, params, driver._Stepper(sched, params), np.random.default_rng(0), [], prev=loss)
    st.snapshot = driver.Snapshot.of(params, loss)
    return st, sched


def _flip(C, rows):
    """Move the argmax of ``rows`` of C to the next column."""
    C[rows] = np.roll(C[rows], 1, axis=1)


def test_answer_rule_stops_only_once_labels_S_and_loss_have_settled():
    rng = np.random.default_rng(0)
    params = _params(rng)
    st, sched = _state(params)
    # nothing changes for a window: settled exactly at the window's end, not before
    assert [driver._check_answer(sched, st, 1.0) for _ in range(sched.window)] == [False] * 4 + [True]
    assert st.change == (0.0, 0.0, 0.0)

    cases = {
        "a cell label": lambda p: _flip(p["atac"].C, [3]),             # 1 of 40 ATAC cells = 2.5 % > 0.1 %
        "a gene label": lambda p: _flip(p["rna"].Cf, [7]),             # 1 of 30 genes
        "a region label": lambda p: _flip(p["atac"].Cf, [0]),
        "S by 5 %": lambda p: p["rna"].S.__imul__(1.05),
    }
    for what, change in cases.items():
        params = _params(np.random.default_rng(1))
        st, sched = _state(params)
        for _ in range(sched.window - 1):
            assert not driver._check_answer(sched, st, 1.0)
        change(params)
        assert not driver._check_answer(sched, st, 1.0), what
        # the next window sees no change any more: settled
        assert [driver._check_answer(sched, st, 1.0) for _ in range(sched.window)][-1], what

    # the loss still falls by 1e-3 per epoch (tol 1e-4): not settled; labels and S unchanged
    params = _params(np.random.default_rng(2))
    st, sched = _state(params, loss=100.0)
    res = [driver._check_answer(sched, st, 100.0 - 0.1 * (i + 1)) for i in range(sched.window)]
    assert res == [False] * sched.window
    assert st.change[2] == pytest.approx(1e-3, rel=1e-2) and st.change[:2] == (0.0, 0.0)


def test_answer_rule_tolerances_are_respected():
    params = _params(np.random.default_rng(3), n=(1000, 1000), p=(1000, 1000))
    st, _ = _state(params)
    sched = driver.Schedule(label_tol=0.002, S_tol=0.01, tol=1e-4, step_decay=1.0, window=1)
    _flip(params["rna"].C, [0, 1])  # 0.2 % of RNA cells: at the tolerance
    assert driver._check_answer(sched, st, 1.0)
    _flip(params["rna"].Cf, [0, 1, 2])  # 0.3 % of genes: above
    assert not driver._check_answer(sched, st, 1.0)
    assert st.change[0] == pytest.approx(0.003)


def test_step_decays_only_while_the_cells_stay():
    params = _params(np.random.default_rng(4))
    sched = driver.Schedule(step_decay=0.5, window=1, learning_rate=0.1, tol=1e-4)
    st, _ = _state(params, sched=sched)
    _flip(params["rna"].Cf, [0])  # features move, cells stay, the loss is flat: the step ceiling halves
    assert not driver._check_answer(sched, st, 1.0)
    assert st.stepper.lr_max == pytest.approx(0.05) and st.stepper.lr <= 0.05
    _flip(params["rna"].C, [0])  # a cell moves: no decay
    assert not driver._check_answer(sched, st, 1.0)
    assert st.stepper.lr_max == pytest.approx(0.05)
    _flip(params["rna"].Cf, [1])  # cells stay but the loss still falls by 2e-3 > 10 tol per epoch: no decay
    assert not driver._check_answer(sched, st, 0.998)
    assert st.stepper.lr_max == pytest.approx(0.05)
    _flip(params["rna"].Cf, [2])  # ... and by 5e-4 <= 10 tol: decay
    assert not driver._check_answer(sched, st, 0.9975)
    assert st.stepper.lr_max == pytest.approx(0.025)


def test_undone_epochs_do_not_count_toward_the_window():
    """Backtracking's undone epochs leave the answer as it was; they must not read as "settled"."""
    c = random_case(seed=5, n_atac=40, n_rna=30, n_genes=12, n_regions=20, layout=(2, 1, 1))
    sched = driver.Schedule(learning_rate=1e6, min_step=1e-2, max_iter=50)  # every epoch is undone
    out = driver.run_once(c["problem"], sched, 2, 1, 1, seed=0)
    assert out.undone == out.n_iter == 7 and out.stop_reason == "step"  # stopped by the step, not by the answer


def test_default_fit_converges_without_warning_well_before_max_iter(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastjmt.ConvergenceWarning)
        r = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=5, random_state=0)
    assert r.converged and r.stop_reason == "answer" and r.n_iter <= 100
    lab, dS, dL = r.answer_change
    assert lab <= 1e-3 and dS <= 1e-2 and dL <= 1e-4
    s = fastjmt.pooled_scores(r, sim.rna_labels, sim.atac_labels)
    # the same clusters as a fit run to the cap under the loss-only rule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        long = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=5, random_state=0, stop="loss", tol=0.0,
                           max_iter=300)
    assert long.n_iter == 300 and not long.converged and long.stop_reason == "max_iter"
    assert s["ari_pooled"] >= fastjmt.pooled_scores(long, sim.rna_labels, sim.atac_labels)["ari_pooled"] - 1e-9


def test_loss_rule_is_still_available(sim):
    r = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=5, stop="loss", tol=1e-3, patience=2)
    assert r.converged and r.stop_reason == "loss" and r.answer_change == ()
    h = r.loss_history[:, -1]
    assert abs(h[-1] - h[-2]) / abs(h[-1]) < 1e-3


def test_cap_warns_and_says_what_still_moves(sim):
    with pytest.warns(fastjmt.ConvergenceWarning, match="labels changed"):
        r = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=5, max_iter=12, tol=0.0)
    assert not r.converged and r.stop_reason == "max_iter" and len(r.answer_change) == 3


def test_result_fields_round_trip(tmp_path, sim):
    r = fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=5)
    r.save(tmp_path / "r.npz")
    back = fastjmt.load_result(tmp_path / "r.npz")
    assert r.stop_reason == "answer" and len(r.answer_change) == 3
    assert back.stop_reason == r.stop_reason and back.answer_change == r.answer_change


@pytest.mark.parametrize("kw, match", [(dict(stop="labels"), "stop"), (dict(window=0), "window"),
                                       (dict(label_tol=-0.1), "label_tol"), (dict(S_tol=float("nan")), "S_tol"),
                                       (dict(step_decay=0.0), "step_decay"), (dict(step_decay=1.5), "step_decay")])
def test_bad_stopping_options_are_refused(sim, kw, match):
    with pytest.raises(ValueError, match=match):
        fastjmt.fit(sim.rna, sim.atac, sim.gene_activity, n_shared=5, **kw)

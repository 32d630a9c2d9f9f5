"""The gradients the fit actually applies: the driver's block steps against the dense reference.

The driver asks :mod:`fastjmt.objective` for every block's gradient and hands
it to the optimiser; these tests put a recorder in the optimiser's place, so
they see exactly what a fit's step would apply, block by block, at the point
the step is taken (the blocks are updated one after another within an epoch).
"""

import dataclasses

import numpy as np
import pytest
from conftest import random_case

import reference as ref
from fastjmt import driver
from fastjmt import objective as obj
from fastjmt.problem import MODALITIES, Batch, MosaicParams

#: the weights of every term well away from zero, so that no term hides behind another
WEIGHTS = dict(a1=3.0, a2=2.0, a3=1.5, a4=2.5, a5=4.0, a6=0.3)


def theta_of(params):
    """The reference's parameter dict from the driver's factors."""
    th = {}
    for m, feat in (("atac", "regions"), ("rna", "genes")):
        f = params[m]
        th.update({"Z_" + m: f.Z.copy(), "Z_" + feat: f.Zf.copy(), "S_" + m: f.S.copy(), "b_" + m: f.b.copy(),
                   "c_" + m: f.c.copy()})
    return th


#: the optimiser's key of a block -> the reference's name of it
REF_NAME = {"Z_atac": "Z_atac", "Z_rna": "Z_rna", "Zf_atac": "Z_regions", "Zf_rna": "Z_genes",
            "S_atac": "S_atac", "S_rna": "S_rna"}


class Recorder:
    """Takes the optimiser's place: records the gradient of every step (with respect to the logits for the
    membership blocks, to S for the association) and, when ``apply``, steps by plain descent."""

    def __init__(self, lr=0.0, on_step=None):
        self.lr, self.on_step, self.seen = lr, on_step, []

    def logits(self, key, Z, rows, C, grad):
        g = obj.run_logit_kernel(grad, C, Z, Z, Z, rows, obj.GRADIENT)
        if self.on_step is not None:
            self.on_step(key, g)
        self.seen.append((key, rows.copy(), g))
        if self.lr:
            Z[rows] -= self.lr * g
        E = np.exp(Z[rows] - Z[rows].max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)

    def __call__(self, key, P, G, rows):
        G = np.asarray(G, dtype=np.float64)
        if self.on_step is not None:
            self.on_step(key, G)
        self.seen.append((key, rows.copy(), G))
        P[rows] -= self.lr * G[rows]


def _case(seed, layout=(2, 1, 1), **kw):
    c = random_case(seed=seed, layout=layout, weights=WEIGHTS, **kw)
    from conftest import params_from_theta

    return c, params_from_theta(c["theta"])


@pytest.mark.parametrize("layout", [(2, 1, 1), (3, 0, 0)])
def test_every_step_of_an_epoch_applies_the_dense_reference_gradient(layout):
    """Full batch, float64, every term on (cosine couplings, mask, entropy): each block's gradient, at the
    point the driver steps it, equals the dense reference's; and the epoch changes the factors."""
    c, params = _case(21, layout)
    R, G, A = c["R"].toarray(), c["G"].toarray(), c["A"].toarray()
    checked = []

    def on_step(key, g):
        expect = ref.gradients(R, G, A, theta_of(params), WEIGHTS, c["rna_only"], c["atac_only"])[REF_NAME[key]]
        np.testing.assert_allclose(g, expect, rtol=1e-9, atol=1e-12, err_msg=key)
        checked.append(key)

    before = theta_of(params)
    rec = Recorder(lr=0.05, on_step=on_step)
    sched = driver.Schedule()
    driver._epoch(c["problem"], params, sched, rec, np.random.default_rng(0), 1)
    assert sorted(checked) == sorted(REF_NAME)  # every block, once
    after = theta_of(params)
    assert all(not np.array_equal(before[k], after[k]) for k in ("Z_atac", "Z_genes", "S_rna"))


def test_the_fit_s_own_stepper_applies_that_gradient():
    """The real optimiser (plain descent) moves each logit block by exactly ``lr`` times the recorded gradient."""
    c, params = _case(22)
    lr = 1e-3
    sched = driver.Schedule(optimizer="gd", learning_rate=lr)
    prob = c["problem"]
    mosaic = prob.as_mosaic()

    def epochs():
        return {b.name: driver._Epoch(b, Batch.whole(b.data.n, b.data.p)) for b in mosaic.blocks}

    for name in MODALITIES:  # the feature steps: the logits before, the gradient the objective gives, the logits after
        saved = {m: f.copy() for m, f in params.items()}
        rec = Recorder()
        driver._feature_step(mosaic, MosaicParams.of_factors(params), name, epochs(), rec, 1)  # then its bias refit
        (_, _, g), = rec.seen
        params = {m: f.copy() for m, f in saved.items()}
        step = driver._Stepper(sched, params)
        driver._feature_step(mosaic, MosaicParams.of_factors(params), name, epochs(), step, 1)
        np.testing.assert_allclose(saved[name].Zf - params[name].Zf, lr * g, rtol=1e-8, atol=1e-15)


def _loss(prob, params):
    return obj.evaluate(prob, params, with_grad=False)[0]["total"]


@pytest.mark.parametrize("cells_first", [True, False])
def test_closed_form_biases_are_minimisers(cells_first):
    """After ``refit_biases`` the loss's gradient in b and c is zero, and moving either raises the loss."""
    c, params = _case(23)
    prob = c["problem"]
    for m in MODALITIES:
        for _ in range(30):  # alternate the two closed forms to their joint minimiser
            obj.refit_biases(prob.modality(m), params[m], cells_first=cells_first)
    base = _loss(prob, params)
    rng = np.random.default_rng(0)
    for m in MODALITIES:
        for field in ("b", "c"):
            v = getattr(params[m], field)
            d = rng.normal(size=v.shape)
            h = 1e-4
            losses = []
            for s in (h, -h):
                v += s * d
                losses.append(_loss(prob, params))
                v -= s * d
            slope = (losses[0] - losses[1]) / (2 * h)
            assert abs(slope) < 1e-6 * max(1.0, abs(base)), (m, field, slope)
            assert min(losses) > base, (m, field)


def _expected_minibatch_gradients(prob, params, frac_cells, frac_features, draws, seed):
    """Mean over ``draws`` mini-batch epochs of the gradient each block's step would apply (zero where the
    block's rows are not in the batch), with the factors held fixed."""
    rng = np.random.default_rng(seed)
    shapes = {"Z_atac": params["atac"].Z.shape, "Z_rna": params["rna"].Z.shape, "Zf_atac": params["atac"].Zf.shape,
              "Zf_rna": params["rna"].Zf.shape, "S_atac": params["atac"].S.shape, "S_rna": params["rna"].S.shape}
    total = {k: np.zeros(s) for k, s in shapes.items()}
    mosaic, mp = prob.as_mosaic(), MosaicParams.of_factors(params)
    for _ in range(draws):
        rec = Recorder()
        batches = driver.draw_batches(mosaic, frac_cells, frac_features, rng)
        eps = {b.name: driver._Epoch(b, batches[b.name]) for b in mosaic.blocks}
        for batch in mosaic.batches:
            driver._cell_and_S_step(mosaic, mp, batch, eps, rec, 1)
        for name in MODALITIES:
            driver._feature_step(mosaic, mp, name, eps, rec, 1)
        for key, rows, g in rec.seen:
            total[key][rows] += g
    return {k: v / draws for k, v in total.items()}


def test_minibatch_updates_average_to_the_full_gradient():
    """Over random batches, every block's expected update equals its full-batch gradient (each term scaled so).

    The test has the power to see the defect it guards against: with the feature coupling unscaled (its
    weight then a4 · batch_features), the mean feature update would miss the full gradient by
    (1 − batch_features) times the coupling's part of it, several times the tolerance here.
    """
    c, params = _case(24, n_atac=16, n_rna=14, n_genes=10, n_regions=12, density=0.5)
    prob = c["problem"]
    for m in MODALITIES:  # biases at their closed form: the steps' refits then leave the factors as they are
        for _ in range(30):
            obj.refit_biases(prob.modality(m), params[m], cells_first=True)
    _, full = obj.evaluate(prob, params)
    frac_features, tol = 0.25, 0.15  # sampling error of the mean over 1500 draws: 0.05–0.07 (seeds 0–2)
    mean = _expected_minibatch_gradients(prob, params, 0.5, frac_features, 1500, 0)
    errors = {key: np.linalg.norm(mean[key] - full[name]) / np.linalg.norm(full[name])
              for key, name in REF_NAME.items()}
    assert max(errors.values()) < tol, errors
    _, without = obj.evaluate(dataclasses.replace(prob, a4=0.0), params)  # the coupling's part: full − without
    for key in ("Zf_atac", "Zf_rna"):
        name = REF_NAME[key]
        miss = (1 - frac_features) * np.linalg.norm(full[name] - without[name]) / np.linalg.norm(full[name])
        assert miss > 3 * tol, (key, miss)

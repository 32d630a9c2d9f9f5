"""asv: block gradient steps, one epoch, whole fits (time and peak memory), quality tracks.

Sizes come from the profile in ``common.py``. JIT compilation happens in
``setup`` (a warm-up call), never in a timed method. Run from ``benchmarks/``:
``asv run --python=same --quick`` (current environment) or
``asv continuous main HEAD``.
"""

import warnings

import numba
import numpy as np

import fastjmt
from fastjmt.driver import Schedule, _cell_and_S_step, _epoch, _Epoch, _feature_step, _Stepper
from fastjmt.initialize import initialize
from fastjmt.objective import evaluate, feature_coupling
from fastjmt.problem import Batch

from .common import THREADS, data, fit, problem

K = 10


class _Prepared:
    """A prepared problem with random factors and an Adam stepper (full batches)."""

    def _prepare(self, dtype, threads=None, low_memory=False):
        self.problem = problem(K, dtype, low_memory)
        self.sched = Schedule()
        self.params = initialize(self.problem, K, 0, 0, "random", np.random.default_rng(0))
        self.step = _Stepper(self.sched, self.params)
        self.rng = np.random.default_rng(1)
        self._threads = numba.get_num_threads()
        if threads is not None:
            numba.set_num_threads(threads)

    def _epoch_state(self, name):
        mod = self.problem.modality(name)
        return _Epoch(self.problem, name, self.params[name], Batch.whole(mod.n, mod.p))

    def teardown(self, *_):
        numba.set_num_threads(self._threads)


class BlockGradients(_Prepared):
    """Each block's hand-derived gradient step (full batch), and the loss/every gradient at once."""

    params = (["float32", "float64"],)
    param_names = ["dtype"]

    def setup(self, dtype):
        self._prepare(dtype)
        self.ep = {m: self._epoch_state(m) for m in ("atac", "rna")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("time_cell_and_S_step_atac", "time_cell_and_S_step_rna", "time_feature_step_atac",
                         "time_feature_step_rna", "time_feature_coupling", "time_loss", "time_loss_and_all_gradients"):
                getattr(self, name)(dtype)

    def time_cell_and_S_step_atac(self, dtype):
        _cell_and_S_step(self.problem, "atac", self.ep["atac"], self.params["rna"].S, self.step, 1)

    def time_cell_and_S_step_rna(self, dtype):
        _cell_and_S_step(self.problem, "rna", self.ep["rna"], self.params["atac"].S, self.step, 1)

    def time_feature_step_atac(self, dtype):
        _feature_step(self.problem, "atac", self.ep["atac"], self.params, self.step, 1)

    def time_feature_step_rna(self, dtype):
        _feature_step(self.problem, "rna", self.ep["rna"], self.params, self.step, 1)

    def time_feature_coupling(self, dtype):
        feature_coupling(self.problem, self.params["rna"].Cf, self.params["atac"].Cf)

    def time_loss(self, dtype):
        evaluate(self.problem, self.params, with_grad=False)

    def time_loss_and_all_gradients(self, dtype):
        evaluate(self.problem, self.params, with_grad=True)


class Epoch(_Prepared):
    """One full-batch epoch (every block once), 1 thread and all, default and ``low_memory`` layouts."""

    params = (["float32", "float64"], THREADS, [False, True])
    param_names = ["dtype", "threads", "low_memory"]

    def setup(self, dtype, threads, low_memory):
        self._prepare(dtype, threads, low_memory)
        self.time_epoch(dtype, threads, low_memory)

    def time_epoch(self, *_):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _epoch(self.problem, self.params, self.sched, self.step, self.rng, 1)

    def peakmem_epoch(self, *_):
        self.time_epoch()


class Fit:
    """Whole fits of a fixed number of epochs (so times compare), their memory, 1 thread and all."""

    params = (["float32", "float64"], THREADS)
    param_names = ["dtype", "threads"]
    timeout = 1800
    epochs = 30

    def setup(self, dtype, threads):
        self.d = data()
        fit(self.d, max_iter=2, dtype=dtype, n_threads=threads)  # compile

    def time_fit(self, dtype, threads):
        fit(self.d, max_iter=self.epochs, tol=0.0, dtype=dtype, n_threads=threads)

    def peakmem_fit(self, dtype, threads):
        fit(self.d, max_iter=self.epochs, tol=0.0, dtype=dtype, n_threads=threads)


class Quality:
    """Default fits on the simulator, tracked so that a regression in quality or speed of convergence shows.

    The fits run once, in ``setup_cache``; every ``track_`` method reads its number from there.
    Pooled ARI is tracked for the default labels (merged columns) and for the argmax, MNN and
    quantile-normalised argmax labellings (the package's functions; the studies in
    ``benchmarks/protocol.py`` add Leiden), and so is the share of ATAC cells in RNA-only clusters.
    """

    params = (["equal", "rna3_atac2", "weak_separation", "noisy_atac", "rare_cluster"],)
    param_names = ["scenario"]
    timeout = 1800
    LAYOUTS = {
        "equal": dict(n_shared=5),
        "rna3_atac2": dict(n_shared=2, n_rna_only=1),
        "weak_separation": dict(n_shared=5, separation=0.4),
        "noisy_atac": dict(n_shared=5, atac_noise=0.5),
        "rare_cluster": dict(n_shared=5, proportions=(1, 1, 1, 1, 0.1)),
    }

    def setup_cache(self):
        out = {}
        for scenario, layout in self.LAYOUTS.items():
            d = data(**layout)
            res = fit(d, random_state=0)
            row = dict(n_iter=res.n_iter, loss=res.loss, fit_seconds=res.fit_seconds)
            C_atac_mnn, _ = fastjmt.mnn_correct(res.C_atac, res.C_rna)
            labelings = {"labels": (res.labels_rna, res.labels_atac), "argmax": (res.columns_rna, res.columns_atac),
                         "mnn": fastjmt.cluster_cells(res.C_rna, C_atac_mnn),
                         "quantile": fastjmt.cluster_cells(*fastjmt.quantile_normalize(res.C_rna, res.C_atac))}
            for name, (lr, la) in labelings.items():
                s = fastjmt.integration_scores(d.rna_labels, d.atac_labels, lr, la)
                row[f"ari_pooled_{name}"] = s["ari_pooled"]
                row[f"atac_in_rna_only_{name}"] = s["atac_in_rna_only"]
            out[scenario] = row
        return out

    def track_ari_pooled(self, fits, scenario):
        return fits[scenario]["ari_pooled_labels"]

    def track_ari_pooled_argmax(self, fits, scenario):
        return fits[scenario]["ari_pooled_argmax"]

    def track_ari_pooled_mnn(self, fits, scenario):
        return fits[scenario]["ari_pooled_mnn"]

    def track_ari_pooled_quantile(self, fits, scenario):
        return fits[scenario]["ari_pooled_quantile"]

    def track_atac_in_rna_only(self, fits, scenario):
        return fits[scenario]["atac_in_rna_only_labels"]

    def track_n_iter(self, fits, scenario):
        return fits[scenario]["n_iter"]

    def track_final_loss(self, fits, scenario):
        return fits[scenario]["loss"]

    def track_fit_seconds(self, fits, scenario):
        return fits[scenario]["fit_seconds"]

    track_fit_seconds.unit = "seconds"

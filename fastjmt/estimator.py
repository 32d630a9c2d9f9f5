"""A scikit-learn style estimator over :func:`fastjmt.fit`: ``JMT(...).fit(rna, atac, gene_activity)``.

scikit-learn's conventions (its developer guide, "Rolling your own estimator"):
every parameter of ``__init__`` is stored as given, under its own name, and
nothing else happens there; :meth:`JMT.get_params` / :meth:`JMT.set_params`
read and write them (so ``sklearn.base.clone`` and grid searches work);
``fit`` returns ``self`` and sets the fitted attributes, whose names end in an
underscore; :meth:`JMT.transform` maps new cells onto the fitted model
(:func:`fastjmt.transform.map_cells`). The defaults are
:data:`fastjmt.options.DEFAULTS`, the same as :func:`fastjmt.fit`'s: one
implementation underneath. scikit-learn itself is not needed.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .options import DEFAULTS, FitOptions

#: the estimator's parameters: every option of fastjmt.fit
PARAMS = FitOptions.names()

#: fitted attributes copied from the JMTResult (each with a trailing underscore)
_RESULT_ATTRS = ("C_rna", "C_atac", "C_genes", "C_regions", "S_rna", "S_atac", "b_rna", "b_atac", "b_genes",
                 "b_regions", "programs_rna", "programs_atac", "labels_rna", "labels_atac", "columns_rna",
                 "columns_atac", "column_clusters", "loss_history", "n_iter", "converged", "stop_reason", "seed",
                 "link_coverage", "n_clusters")


class JMT:
    """scJMT as an estimator: parameters as :func:`fastjmt.fit`'s keyword options, fitted attributes with ``_``.

    Parameters
    ----------
    n_shared, n_rna_only, n_atac_only, a1, …, resolution
        Every keyword option of :func:`fastjmt.fit`, with the same meaning and
        default (:class:`fastjmt.options.FitOptions`). Checked when
        :meth:`fit` runs, not here (scikit-learn's rule).

    Attributes
    ----------
    result_ : JMTResult
        The whole fit.
    C_rna_, C_atac_ : ndarray, shape (n_cells, K)
        Cell memberships. Likewise ``C_genes_``, ``C_regions_``, ``S_rna_``,
        ``S_atac_``, the biases ``b_*_``, ``programs_rna_`` / ``programs_atac_``,
        ``labels_rna_`` / ``labels_atac_`` (the recommended clusters),
        ``columns_rna_`` / ``columns_atac_``, ``column_clusters_``,
        ``loss_history_``, ``n_iter_``, ``converged_``, ``stop_reason_``,
        ``seed_``, ``link_coverage_``, ``n_clusters_``: the attributes of
        :class:`fastjmt.JMTResult` of the same name.
    n_features_rna_, n_features_atac_ : int
        Genes and regions the model was fitted on (``transform`` needs the same).

    Examples
    --------
    >>> import fastjmt
    >>> d = fastjmt.simulate(random_state=0)
    >>> model = fastjmt.JMT(n_shared=5).fit(d.rna, d.atac, d.gene_activity)   # doctest: +SKIP
    >>> new = model.transform(rna=d.rna[:100])                                  # doctest: +SKIP
    >>> new["rna"]["labels"]                                                   # doctest: +SKIP
    """

    def __init__(
        self,
        n_shared=DEFAULTS.n_shared,
        n_rna_only=DEFAULTS.n_rna_only,
        n_atac_only=DEFAULTS.n_atac_only,
        a1=DEFAULTS.a1,
        a2=DEFAULTS.a2,
        a3=DEFAULTS.a3,
        a4=DEFAULTS.a4,
        a5=DEFAULTS.a5,
        a6=DEFAULTS.a6,
        max_iter=DEFAULTS.max_iter,
        tol=DEFAULTS.tol,
        patience=DEFAULTS.patience,
        stop=DEFAULTS.stop,
        window=DEFAULTS.window,
        label_tol=DEFAULTS.label_tol,
        S_tol=DEFAULTS.S_tol,
        step_decay=DEFAULTS.step_decay,
        learning_rate=DEFAULTS.learning_rate,
        backtrack=DEFAULTS.backtrack,
        optimizer=DEFAULTS.optimizer,
        batch_cells=DEFAULTS.batch_cells,
        batch_features=DEFAULTS.batch_features,
        init=DEFAULTS.init,
        init_scale=DEFAULTS.init_scale,
        n_init=DEFAULTS.n_init,
        random_state=DEFAULTS.random_state,
        n_threads=DEFAULTS.n_threads,
        dtype=DEFAULTS.dtype,
        preprocess=DEFAULTS.preprocess,
        verbose=DEFAULTS.verbose,
        callback=DEFAULTS.callback,
        checkpoint=DEFAULTS.checkpoint,
        checkpoint_every=DEFAULTS.checkpoint_every,
        resume=DEFAULTS.resume,
        low_memory=DEFAULTS.low_memory,
        resolution=DEFAULTS.resolution,
        client=DEFAULTS.client,
        persist=DEFAULTS.persist,
        out=DEFAULTS.out,
        start_cells=DEFAULTS.start_cells,
    ):
        self.n_shared = n_shared
        self.n_rna_only = n_rna_only
        self.n_atac_only = n_atac_only
        self.a1 = a1
        self.a2 = a2
        self.a3 = a3
        self.a4 = a4
        self.a5 = a5
        self.a6 = a6
        self.max_iter = max_iter
        self.tol = tol
        self.patience = patience
        self.stop = stop
        self.window = window
        self.label_tol = label_tol
        self.S_tol = S_tol
        self.step_decay = step_decay
        self.learning_rate = learning_rate
        self.backtrack = backtrack
        self.optimizer = optimizer
        self.batch_cells = batch_cells
        self.batch_features = batch_features
        self.init = init
        self.init_scale = init_scale
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads
        self.dtype = dtype
        self.preprocess = preprocess
        self.verbose = verbose
        self.callback = callback
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.low_memory = low_memory
        self.resolution = resolution
        self.client = client
        self.persist = persist
        self.out = out
        self.start_cells = start_cells

    # ------------------------------------------------------------------ scikit-learn's parameter protocol

    def get_params(self, deep: bool = True) -> dict:
        """The parameters, as given to ``__init__`` or :meth:`set_params` (``deep`` is accepted and ignored:
        no parameter is an estimator)."""
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params) -> "JMT":
        """Set parameters by name; an unknown name raises ``ValueError`` naming the valid ones."""
        for name, value in params.items():
            if name not in PARAMS:
                raise ValueError(f"invalid parameter {name!r} for JMT; valid parameters: {', '.join(PARAMS)}")
            setattr(self, name, value)
        return self

    def __sklearn_clone__(self) -> "JMT":
        """scikit-learn's ``clone``: an unfitted copy with deep copies of the parameters, except ``client``
        (a live connection to a Dask cluster, shared by the copy, never copied)."""
        import copy

        params = self.get_params()
        client = params.pop("client")
        return type(self)(client=client, **copy.deepcopy(params))

    def __getstate__(self) -> dict:
        """Pickled without the Dask ``client`` (a live connection; it is None in the copy)."""
        state = dict(self.__dict__)
        state["client"] = None
        return state

    def __sklearn_is_fitted__(self) -> bool:
        """For ``sklearn.utils.validation.check_is_fitted``."""
        return getattr(self, "result_", None) is not None

    def __sklearn_tags__(self):
        """scikit-learn's tags (only called by scikit-learn, so imported only then): an unsupervised
        transformer whose fit takes sparse input and no target."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(), input_tags=InputTags(sparse=True))

    def __repr__(self) -> str:
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, getattr(DEFAULTS, k))]
        return f"JMT({', '.join(changed)})"

    # ------------------------------------------------------------------ fitting and mapping

    def fit(self, rna, atac, gene_activity, y=None) -> "JMT":
        """Fit on RNA cells × genes, ATAC cells × regions and the genes × regions gene activity.

        The arguments and errors are those of :func:`fastjmt.fit`; ``y`` is
        ignored (scikit-learn's signature for unsupervised estimators).
        Returns ``self``.
        """
        from .api import fit

        result = fit(rna, atac, gene_activity, **self.get_params())
        self._set_fitted(result)
        return self

    def fit_transform(self, rna, atac, gene_activity, y=None) -> dict:
        """Fit, then the training cells' memberships: ``{"rna": C_rna_, "atac": C_atac_}``."""
        self.fit(rna, atac, gene_activity)
        return {"rna": self.C_rna_, "atac": self.C_atac_}

    def transform(self, rna=None, atac=None, *, max_iter: int = 100) -> dict:
        """Memberships of new cells on the fitted model (features, associations and feature biases fixed).

        Parameters
        ----------
        rna : sparse matrix or array-like, shape (n_new, n_features_rna_), optional
            New RNA cells over the training genes (same order), raw counts as for ``fit``.
        atac : sparse matrix or array-like, shape (n_new, n_features_atac_), optional
            New ATAC cells over the training regions.
        max_iter : int
            Iterations of the mapping at most.

        Returns
        -------
        dict
            For each modality given: ``{"C", "columns", "labels", "programs", "b", "n_iter"}``
            (see :func:`fastjmt.transform.map_cells`).

        Raises
        ------
        RuntimeError
            Before ``fit`` (or ``load``).
        ValueError
            No modality given, or a feature count other than the model's.
        """
        from .transform import map_cells

        return map_cells(self._result(), rna=rna, atac=atac, max_iter=max_iter)

    def _result(self):
        result = getattr(self, "result_", None)
        if result is None:
            raise RuntimeError("this JMT instance is not fitted yet: call fit(rna, atac, gene_activity) first "
                               "(or JMT.load(path))")
        return result

    def _set_fitted(self, result) -> None:
        self.result_ = result
        for name in _RESULT_ATTRS:
            setattr(self, name + "_", getattr(result, name))
        self.n_features_rna_ = result.C_genes.shape[0]
        self.n_features_atac_ = result.C_regions.shape[0]

    # ------------------------------------------------------------------ saving without pickle

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (a folder, created if needed): ``result.npz``
        (:meth:`JMTResult.save`: arrays and a JSON header, no pickle) and ``params.json`` (the
        parameters that JSON can hold; a callback is not saved). Format ``fastjmt-model-1``."""
        result = self._result()
        os.makedirs(path, exist_ok=True)
        result.save(os.path.join(path, "result.npz"))
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.get_params().items()}
        params = {k: v for k, v in params.items() if _jsonable(v)}
        params["dtype"] = np.dtype(self.dtype).name
        with open(os.path.join(path, "params.json"), "w", encoding="utf-8") as fh:
            json.dump({"format": MODEL_FORMAT, "params": params}, fh, indent=1)

    @classmethod
    def load(cls, path) -> "JMT":
        """A fitted estimator back from :meth:`save`'s folder.

        Raises
        ------
        FileNotFoundError
            ``path`` holds no ``params.json`` / ``result.npz``.
        ValueError
            Another format.
        """
        from .api import load_result

        with open(os.path.join(path, "params.json"), encoding="utf-8") as fh:
            try:
                meta = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{os.fspath(path)!r} is not a fastjmt model: params.json is not JSON "
                                 f"({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{os.fspath(path)!r} is not a fastjmt model: format {found!r}, expected {MODEL_FORMAT!r}")
        params = {k: v for k, v in meta["params"].items() if k in PARAMS}
        if "dtype" in params:  # saved by name: back to the NumPy type fit's signature uses
            params["dtype"] = np.dtype(params["dtype"]).type
        est = cls(**params)
        est._set_fitted(load_result(os.path.join(path, "result.npz")))
        return est


MODEL_FORMAT = "fastjmt-model-1"


def _jsonable(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _same(a, b) -> bool:
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else False
    except Exception:
        return False


#: the mosaic estimator's parameters: n_shared, private and every option fastjmt.fit_mosaic takes
MOSAIC_PARAMS = ("n_shared", "private") + tuple(
    p for p in PARAMS if p not in ("n_shared", "n_rna_only", "n_atac_only", "client", "persist", "out",
                                   "start_cells"))

#: fitted attributes copied from the MosaicResult (each with a trailing underscore)
_MOSAIC_ATTRS = ("batches", "memberships", "programs", "S", "b", "C_genes", "C_regions", "b_genes", "b_regions",
                 "labels", "columns", "column_clusters", "loss_history", "n_iter", "converged", "stop_reason",
                 "seed", "link_coverage", "empty")


class JMTMosaic:
    """:func:`fastjmt.fit_mosaic` as an estimator: ``JMTMosaic(n_shared=15).fit(batches, gene_activity)``.

    Parameters
    ----------
    n_shared, private
        As in :func:`fastjmt.fit_mosaic`.
    **options
        Any option :func:`fastjmt.fit_mosaic` takes, with its default (:data:`MOSAIC_PARAMS`); stored under
        its own name as given and checked when :meth:`fit` runs (scikit-learn's rule). Unlike :class:`JMT`,
        the options come as keywords rather than named ``__init__`` arguments; :meth:`get_params` and
        :meth:`set_params` cover all of them.

    Attributes
    ----------
    result_ : MosaicResult
        The whole fit.
    labels_, memberships_, columns_, programs_, S_, b_ : dict
        Per batch, as the :class:`fastjmt.MosaicResult` attributes of the same name; likewise ``C_genes_``,
        ``C_regions_``, ``b_genes_``, ``b_regions_``, ``column_clusters_``, ``loss_history_``, ``n_iter_``,
        ``converged_``, ``stop_reason_``, ``seed_``, ``link_coverage_``, ``empty_``, ``batches_``.

    Notes
    -----
    There is no ``transform`` yet: new cells are not mapped onto a mosaic model.
    """

    def __init__(self, n_shared=DEFAULTS.n_shared, private=None, **options):
        unknown = sorted(set(options) - set(MOSAIC_PARAMS))
        if unknown:
            raise TypeError(f"JMTMosaic got an unexpected parameter {unknown[0]!r}; valid parameters: "
                            f"{', '.join(MOSAIC_PARAMS)}")
        self.n_shared = n_shared
        self.private = private
        for name in MOSAIC_PARAMS[2:]:
            setattr(self, name, options.get(name, getattr(DEFAULTS, name)))

    def get_params(self, deep: bool = True) -> dict:
        """The parameters, as given (``deep`` is accepted and ignored)."""
        return {name: getattr(self, name) for name in MOSAIC_PARAMS}

    def set_params(self, **params) -> "JMTMosaic":
        """Set parameters by name; an unknown name raises ``ValueError`` naming the valid ones."""
        for name, value in params.items():
            if name not in MOSAIC_PARAMS:
                raise ValueError(f"invalid parameter {name!r} for JMTMosaic; valid parameters: "
                                 f"{', '.join(MOSAIC_PARAMS)}")
            setattr(self, name, value)
        return self

    def __sklearn_clone__(self) -> "JMTMosaic":
        """scikit-learn's ``clone``: an unfitted copy with deep copies of the parameters."""
        import copy

        return type(self)(**copy.deepcopy(self.get_params()))

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "result_", None) is not None

    def __sklearn_tags__(self):
        """scikit-learn's tags, as :class:`JMT`'s (imported only when scikit-learn asks)."""
        return JMT.__sklearn_tags__(self)

    def __repr__(self) -> str:
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if k == "n_shared" or k == "private" and v or k not in ("n_shared", "private")
                   and not _same(v, getattr(DEFAULTS, k))]
        return f"JMTMosaic({', '.join(changed)})"

    def fit(self, batches, gene_activity, y=None) -> "JMTMosaic":
        """Fit the mosaic ``batches`` (as :func:`fastjmt.fit_mosaic`) and set the fitted attributes; returns
        ``self``. The errors are those of :func:`fastjmt.fit_mosaic`; ``y`` is ignored."""
        from .mosaic import fit_mosaic

        params = self.get_params()
        result = fit_mosaic(batches, gene_activity, **params)
        self.result_ = result
        for name in _MOSAIC_ATTRS:
            setattr(self, name + "_", getattr(result, name))
        return self

    def fit_transform(self, batches, gene_activity, y=None) -> dict:
        """Fit, then each batch's memberships (``memberships_``)."""
        return self.fit(batches, gene_activity).memberships_

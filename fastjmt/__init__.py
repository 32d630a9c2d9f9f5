"""fastjmt: fast, sparse scJMT — joint matrix tri-factorisation of unpaired scRNA-seq and scATAC-seq.

>>> import fastjmt
>>> data = fastjmt.simulate(random_state=0)
>>> res = fastjmt.fit(data.rna, data.atac, data.gene_activity, n_shared=5)
>>> res.labels_rna, res.labels_atac          # doctest: +SKIP

``import fastjmt`` is cheap: it loads neither NumPy, SciPy nor Numba. The
public names below are imported from their modules on first use (PEP 562),
so a library that only imports fastjmt as an optional backend pays nothing
until it fits.
"""

import importlib as _importlib
import logging as _logging

__version__ = "0.1.0"

_logging.getLogger("fastjmt").addHandler(_logging.NullHandler())

#: public name -> the submodule that defines it
_LAZY = {
    "ConvergenceWarning": "errors",
    "DEFAULT_WEIGHTS": "options",
    "CheckpointError": "errors",
    "JMT": "estimator",
    "JMTMosaic": "estimator",
    "JMTResult": "api",
    "KSelection": "model_selection",
    "LinkCoverageWarning": "errors",
    "fit": "api",
    "load_result": "api",
    "NonFiniteError": "errors",
    "adjusted_rand_index": "metrics",
    "cluster_cells": "clustering",
    "merge_columns": "clustering",
    "fit_mosaic": "mosaic",
    "MosaicResult": "mosaic",
    "mnn_correct": "postprocess",
    "quantile_normalize": "postprocess",
    "select_k": "model_selection",
    "integration_scores": "metrics",
    "link_coverage": "genome",
    "read_10x": "tenx",
    "normalized_mutual_info": "metrics",
    "pooled_scores": "metrics",
    "SimulatedData": "simulation",
    "simulate": "simulation",
    "simulate_mosaic": "simulation",
    "SimulatedMosaic": "simulation",
}

__all__ = sorted(_LAZY)


#: submodules reachable as attributes (``fastjmt.tl.jmt``), imported on first use
_SUBMODULES = ("tl",)


def __getattr__(name):
    if name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastjmt' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))

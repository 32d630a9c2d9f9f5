"""fastjmt: fast, sparse scJMT — joint matrix tri-factorisation of unpaired scRNA-seq and scATAC-seq.

>>> import fastjmt
>>> data = fastjmt.simulate(random_state=0)
>>> res = fastjmt.fit(data.rna, data.atac, data.gene_activity, n_shared=5)
>>> res.labels_rna, res.labels_atac          # doctest: +SKIP
"""

import logging as _logging

from .api import DEFAULT_WEIGHTS, ConvergenceWarning, JMTResult, fit, load_result
from .driver import NonFiniteError
from .metrics import adjusted_rand_index, normalized_mutual_info, pooled_scores
from .simulate import SimulatedData, simulate

__version__ = "0.1.0"

_logging.getLogger("fastjmt").addHandler(_logging.NullHandler())

__all__ = [
    "ConvergenceWarning",
    "DEFAULT_WEIGHTS",
    "JMTResult",
    "NonFiniteError",
    "SimulatedData",
    "adjusted_rand_index",
    "fit",
    "load_result",
    "normalized_mutual_info",
    "pooled_scores",
    "simulate",
]

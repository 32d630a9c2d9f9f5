"""Input checks for :func:`fastjmt.fit`: clear errors naming the argument and the fix.

Everything here runs before any copy of the data, any preprocessing and any
Numba compilation. Matrices are inspected where they lie (the stored values
of a sparse matrix, the array itself for dense input).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

#: Sparse formats whose ``.data`` holds exactly the stored values.
_DATA_FORMATS = ("csr", "csc", "coo", "bsr", "dia")


def check_count(value, name: str, minimum: int) -> int:
    """An integer ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value, name: str) -> float:
    """A number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 < value <= 1.0):
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """A finite number ``> 0`` (or ``>= 0`` with ``allow_zero``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_layout(n_shared, n_rna_only, n_atac_only):
    """The cluster counts: at least one shared cluster, none negative."""
    if isinstance(n_shared, numbers.Integral) and not isinstance(n_shared, bool) and n_shared == 0:
        raise ValueError("n_shared must be >= 1: with no shared cluster there is nothing to integrate; "
                         "fit each modality on its own instead")
    n_shared = check_count(n_shared, "n_shared", 1)
    n_rna_only = check_count(n_rna_only, "n_rna_only", 0)
    n_atac_only = check_count(n_atac_only, "n_atac_only", 0)
    K = n_shared + n_rna_only + n_atac_only
    if K < 2:
        raise ValueError(f"K = n_shared + n_rna_only + n_atac_only must be >= 2, got {K}; "
                         "a single cluster has no structure to find")
    return n_shared, n_rna_only, n_atac_only


def _values(X, name):
    """The stored values of ``X`` (no copy for CSR/CSC/COO/BSR/DIA or ndarrays) and its shape."""
    if X is None:
        raise TypeError(f"{name} is required (a scipy sparse matrix or a dense 2-D array)")
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got {X.ndim} dimension(s)")
        values = X.data if X.format in _DATA_FORMATS else X.tocsr().data
        return np.asarray(values), X.shape, X.dtype
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__") and not hasattr(X, "__array__"):
        raise TypeError(f"{name} must be a scipy sparse matrix or a 2-D array, got {type(X).__name__}")
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} could not be read as a 2-D numeric array: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (cells or features × features), got {arr.ndim} dimension(s) "
                         f"with shape {arr.shape}")
    return arr, arr.shape, arr.dtype


def check_matrix(X, name: str, allow_negative: bool = False):
    """Validate one input matrix where it lies; returns its shape.

    Refuses: None, non-2-D input, non-numeric or complex dtypes, empty
    matrices, NaN or infinite values, and (unless ``allow_negative``)
    negative values.
    """
    values, shape, dtype = _values(X, name)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} has complex dtype {dtype}; pass real values (e.g. the real part or abs)")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {shape}); it needs at least one row and one column")
    if values.size:
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinite values; remove or impute them before fitting")
        if not allow_negative and values.min() < 0:
            raise ValueError(f"{name} has negative values; counts and links must be >= 0 "
                             "(or pass preprocess=False with data you prepared yourself)")
    return tuple(int(s) for s in shape)


def check_shapes(rna_shape, atac_shape, ga_shape, K):
    """The three matrices fit together, and each modality has at least K cells."""
    if ga_shape != (rna_shape[1], atac_shape[1]):
        hint = " (it looks transposed: pass gene_activity.T)" if ga_shape == (atac_shape[1], rna_shape[1]) else ""
        raise ValueError(
            f"gene_activity must be genes × regions = ({rna_shape[1]}, {atac_shape[1]}) to match rna "
            f"{rna_shape} and atac {atac_shape}, got {ga_shape}{hint}"
        )
    for shape, name in ((rna_shape, "rna"), (atac_shape, "atac")):
        if shape[0] < K:
            raise ValueError(f"{name} has {shape[0]} cells, fewer than K = {K} clusters; lower the cluster counts")

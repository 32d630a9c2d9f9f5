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
    if type(X).__module__.startswith("dask.") and hasattr(X, "chunks"):
        raise TypeError(f"{name} is a Dask array, which this function takes in memory only: pass {name}.compute() "
                        "(fastjmt.fit fits RNA and ATAC Dask arrays directly)")
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


def check_matrix(X, name: str, allow_negative: bool = False, require_nonzero: bool = False):
    """Validate one input matrix where it lies; returns its shape.

    Refuses: None, non-2-D input, non-numeric or complex dtypes, empty
    matrices, NaN or infinite values, (unless ``allow_negative``) negative
    values, and (with ``require_nonzero``) a matrix without any nonzero value.
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
    if require_nonzero and not np.any(values):
        what = {"rna": "RNA", "atac": "ATAC"}.get(name, name)
        raise ValueError(f"{name} has no nonzero value: the {what} matrix {tuple(shape)} holds no signal, so every "
                         "cell would land in one cluster; check that the right matrix or layer was passed")
    return tuple(int(s) for s in shape)


def check_inputs(rna, atac, gene_activity, K: int, preprocess: bool = True):
    """The checks every entry point runs on its three matrices before any other work.

    Each matrix is validated where it lies (:func:`check_matrix`); RNA and ATAC
    must hold at least one nonzero value, the gene activity at least one link;
    the shapes must fit together and each modality needs at least ``K`` cells.
    Negative values are refused unless ``preprocess`` is False (gene activity:
    always). Returns the three shapes.

    Raises
    ------
    ValueError, TypeError
        Naming the argument and what to do.
    """
    shapes = [check_matrix(X, name, allow_negative=not preprocess and name != "gene_activity",
                           require_nonzero=name != "gene_activity")
              for X, name in ((rna, "rna"), (atac, "atac"), (gene_activity, "gene_activity"))]
    check_shapes(*shapes, K)
    values, _, _ = _values(gene_activity, "gene_activity")
    if not np.any(values):
        raise ValueError("gene_activity has no nonzero link: nothing bridges the RNA genes and the ATAC regions, and "
                         "the fit would integrate nothing. Check how the links were built (gene names, contig names "
                         "and genome build of the annotation; fastjmt.genome.check_links reports the coverage)")
    return shapes


def not_counts(X) -> str:
    """Why ``X`` does not look like raw counts (non-integer or log-transformed values), or "" when it does."""
    values, _, dtype = _values(X, "rna")
    if values.size == 0 or not np.issubdtype(values.dtype, np.floating):
        return ""
    frac = values != np.floor(values)
    if not frac.any():
        return ""
    share = float(np.count_nonzero(frac)) / values.size
    vmax = float(values.max())
    logged = " and look log-transformed (the largest is " + f"{vmax:.3g})" if vmax < 30 else ""
    return f"{100 * share:.0f} % of its stored values are not integers{logged}"


def check_shapes(rna_shape, atac_shape, ga_shape, K):
    """The three matrices fit together, and each modality has at least K cells."""
    if ga_shape != (rna_shape[1], atac_shape[1]):
        for shape, name, n, what in ((rna_shape, "rna", ga_shape[0], "genes"),
                                     (atac_shape, "atac", ga_shape[1], "regions")):
            if shape[1] != n and shape[0] == n and ga_shape != (atac_shape[1], rna_shape[1]):
                raise ValueError(f"{name} must be cells × {what}; its shape {shape} has the gene activity's {n} {what} "
                                 f"as rows: it looks transposed (10x .mtx files are features × cells): pass {name}.T")
        hint = " (it looks transposed: pass gene_activity.T)" if ga_shape == (atac_shape[1], rna_shape[1]) else ""
        raise ValueError(
            f"gene_activity must be genes × regions = ({rna_shape[1]}, {atac_shape[1]}) to match rna "
            f"{rna_shape} and atac {atac_shape}, got {ga_shape}{hint}"
        )
    for shape, name in ((rna_shape, "rna"), (atac_shape, "atac")):
        if shape[0] < K:
            raise ValueError(f"{name} has {shape[0]} cells, fewer than K = {K} clusters; lower the cluster counts")

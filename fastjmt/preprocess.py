"""Sparse preprocessing applied by :func:`fastjmt.fit` (switchable off), never densifying.

Every function returns a canonical CSR matrix (sorted, summed duplicates) and
leaves its input untouched unless called with ``copy=False`` (used by
:func:`fastjmt.fit` on its own private copy, to keep peak memory down).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def to_csr(X, dtype=np.float64, name: str = "X") -> sp.csr_matrix:
    """A canonical CSR copy of ``X`` in ``dtype`` (anything scipy can turn into CSR).

    Duplicate entries are summed, indices sorted and explicit zeros dropped, on
    a copy: the caller's matrix is never modified.
    """
    if sp.issparse(X):
        M = sp.csr_matrix(X, dtype=dtype, copy=True)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got an array with {arr.ndim} dimension(s)")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        M = sp.csr_matrix(arr.astype(dtype, copy=False))
    M.sum_duplicates()  # also sorts indices
    M.eliminate_zeros()
    return M


def normalize_log1p(X: sp.csr_matrix, target_sum: float | None = None, copy: bool = True) -> sp.csr_matrix:
    """Library-size normalisation then ``log1p``, per cell (row).

    Each row is scaled to sum to ``target_sum`` (default: the median nonzero
    library size), then ``log1p`` is applied to the stored values. All-zero rows
    stay zero.
    """
    X = X.copy() if copy else X
    lib = np.asarray(X.sum(axis=1)).ravel()
    if target_sum is None:
        nz = lib[lib > 0]
        target_sum = float(np.median(nz)) if nz.size else 1.0
    scale = np.zeros_like(lib)
    np.divide(target_sum, lib, out=scale, where=lib > 0)
    X.data *= np.repeat(scale, np.diff(X.indptr)).astype(X.dtype)
    np.log1p(X.data, out=X.data)
    return X


def scale_to_unit_max(X: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """Divide by the largest stored value so entries lie in [0, 1] (for nonnegative data)."""
    X = X.copy() if copy else X
    m = X.data.max() if X.nnz else 0.0
    if m > 0:
        X.data /= m
    return X


def binarize(X: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """Every stored nonzero becomes 1."""
    X = X.copy() if copy else X
    X.data[:] = 1
    return X


def normalize_rows(X: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """Scale each row to sum to 1 (all-zero rows stay zero)."""
    X = X.copy() if copy else X
    s = np.asarray(X.sum(axis=1)).ravel()
    inv = np.zeros_like(s)
    np.divide(1.0, s, out=inv, where=s != 0)
    X.data *= np.repeat(inv, np.diff(X.indptr)).astype(X.dtype)
    return X


def preprocess_rna(G: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """RNA default: library-size normalisation + log1p, then scaled to a maximum of 1."""
    return scale_to_unit_max(normalize_log1p(G, copy=copy), copy=False)


def preprocess_atac(R: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """ATAC default: binarisation."""
    return binarize(R, copy=copy)


def preprocess_gene_activity(A: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """Gene activity default: each gene's row scaled to sum to 1."""
    return normalize_rows(A, copy=copy)

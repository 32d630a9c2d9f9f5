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
    a copy: the caller's matrix is never modified. A CSR input that is already
    canonical (sorted, no duplicates, no stored zeros) shares its index arrays
    with the result, which only copies the values: callers must not change
    the result's ``indices``/``indptr`` in place (nothing in fastjmt does).
    """
    if sp.issparse(X) and X.format == "csr" and X.has_canonical_format and np.count_nonzero(X.data) == X.nnz:
        # already canonical: copy the values only and share the (read-only) index arrays
        M = sp.csr_matrix((X.data.astype(dtype, copy=True), X.indices, X.indptr), shape=X.shape, copy=False)
        M.has_canonical_format = True
        return M
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


#: stored values one step of :func:`scale_rows` / :func:`row_sums` handles at once (a 32 MiB float64 temporary)
_RUN_VALUES = 1 << 22


def row_runs(indptr: np.ndarray):
    """Yield ``(r0, r1)``: consecutive runs of rows holding about ``_RUN_VALUES`` stored values each.

    A row longer than that is a run of its own; every row is in exactly one run.
    """
    n = indptr.size - 1
    r0 = 0
    while r0 < n:
        start = int(indptr[r0])
        r1 = int(np.searchsorted(indptr, start + _RUN_VALUES, side="right")) - 1
        r1 = min(n, max(r1, r0 + 1))
        yield r0, r1
        r0 = r1


def scale_rows(X: sp.csr_matrix, scale: np.ndarray) -> None:
    """Multiply the stored values of row ``i`` by ``scale[i]``, in place.

    NumPy over runs of rows (:func:`row_runs`), so no nnz-sized temporary is
    made (the per-value factors of one run at a time).
    """
    indptr, data = X.indptr, X.data
    scale = np.asarray(scale, dtype=data.dtype)
    for r0, r1 in row_runs(indptr):
        start, stop = int(indptr[r0]), int(indptr[r1])
        if stop > start:
            data[start:stop] *= np.repeat(scale[r0:r1], np.diff(indptr[r0:r1 + 1]))


def row_sums(indptr: np.ndarray, data: np.ndarray) -> tuple:
    """Row sums and row sums of squares of a CSR matrix's stored values, in float64.

    NumPy over runs of rows (:func:`row_runs`): a float64 temporary of one run
    at a time, never of all nonzeros. Each row is summed by ``np.add.reduceat``
    in a fixed order, independent of the number of threads.
    """
    n = indptr.size - 1
    sums, sq = np.zeros(n), np.zeros(n)
    for r0, r1 in row_runs(indptr):
        start, stop = int(indptr[r0]), int(indptr[r1])
        if stop == start:
            continue
        vals = data[start:stop].astype(np.float64)
        lengths = np.diff(indptr[r0:r1 + 1])
        filled = np.flatnonzero(lengths > 0)
        # offsets of the non-empty rows only: each segment then ends where its row does
        offsets = (indptr[r0:r1][filled] - start).astype(np.int64)
        sums[r0 + filled] = np.add.reduceat(vals, offsets)
        np.multiply(vals, vals, out=vals)
        sq[r0 + filled] = np.add.reduceat(vals, offsets)
    return sums, sq


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
    scale_rows(X, scale)
    np.log1p(X.data, out=X.data)
    return X


def scale_to_unit_max(X: sp.csr_matrix, copy: bool = True, max_value: float | None = None) -> sp.csr_matrix:
    """Divide by the largest stored value so entries lie in [0, 1] (for nonnegative data).

    ``max_value``: divide by this instead (a reference's largest value, for new cells mapped onto it).
    """
    X = X.copy() if copy else X
    m = (X.data.max() if X.nnz else 0.0) if max_value is None else max_value
    if m > 0:
        X.data /= X.data.dtype.type(m) if max_value is not None else m
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
    scale_rows(X, inv)
    return X


def preprocess_rna(G: sp.csr_matrix, copy: bool = True, target_sum: float | None = None,
                   max_value: float | None = None) -> sp.csr_matrix:
    """RNA default: library-size normalisation + log1p, then scaled to a maximum of 1.

    ``target_sum`` and ``max_value`` default to this matrix's own (see :func:`rna_constants`);
    new cells mapped onto a fitted model take the model's.
    """
    return scale_to_unit_max(normalize_log1p(G, target_sum=target_sum, copy=copy), copy=False, max_value=max_value)


def rna_constants(G: sp.csr_matrix) -> dict:
    """The two numbers :func:`preprocess_rna` derives from the whole matrix: ``target_sum`` (the median
    nonzero library size) and ``max_value`` (the largest value after normalisation and log1p)."""
    return rna_constants_of(*library_and_row_max(G))


def library_and_row_max(G: sp.csr_matrix) -> tuple:
    """Each cell's library size and largest count (float64, one per cell) of a CSR matrix: what
    :func:`rna_constants_of` needs, e.g. from each row chunk of a Dask array."""
    lib = np.asarray(G.sum(axis=1), dtype=np.float64).ravel()
    row_max = np.zeros_like(lib)
    counts = np.diff(G.indptr)
    if G.nnz:  # in the data's dtype (a maximum is exact): no float64 copy of every value
        row_max[counts > 0] = np.maximum.reduceat(G.data, G.indptr[:-1][counts > 0])
    return lib, row_max


def rna_constants_of(lib: np.ndarray, row_max: np.ndarray) -> dict:
    """:func:`rna_constants` from each cell's library size and largest count (float64, one per cell), e.g.
    gathered from the row chunks of a Dask array."""
    nz = lib[lib > 0]
    target = float(np.median(nz)) if nz.size else 1.0
    scale = np.zeros_like(lib)
    np.divide(target, lib, out=scale, where=lib > 0)
    return {"target_sum": target, "max_value": float(np.log1p(np.max(row_max * scale))) if nz.size else 0.0}


def preprocess_atac(R: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """ATAC default: binarisation."""
    return binarize(R, copy=copy)


def preprocess_gene_activity(A: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """Gene activity default: each gene's row scaled to sum to 1."""
    return normalize_rows(A, copy=copy)


def tfidf_scales(row_sums: np.ndarray, col_sums: np.ndarray) -> tuple:
    """The row and column factors of TF-IDF: ``1 / cell total`` and ``log(1 + n_cells / (1 + region total))``.

    The package's one TF-IDF (the LSI of the start, :mod:`fastjmt.initialize`,
    applies it implicitly; :func:`tfidf` explicitly). The inverse document
    frequency is Signac's ``log(1 + n_cells / region total)`` with a
    pseudo-count of 1 in the denominator, so regions that are never open get a
    finite weight. Cells with no counts get row factor 0. Float64.
    """
    row = np.zeros(row_sums.shape[0])
    np.divide(1.0, row_sums, out=row, where=row_sums > 0)
    return row, np.log1p(row_sums.shape[0] / (1.0 + np.asarray(col_sums, dtype=np.float64)))


def tfidf(R: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """TF-IDF of ATAC counts: ``(x / cell total) · log(1 + n_cells / (1 + region total))`` (:func:`tfidf_scales`).

    All-zero cells and regions stay zero.
    """
    R = R.copy() if copy else R
    rows, cols = tfidf_scales(np.asarray(R.sum(axis=1), dtype=np.float64).ravel(),
                              np.bincount(R.indices, weights=R.data, minlength=R.shape[1]))
    scale_rows(R, rows)
    R.data *= cols[R.indices].astype(R.dtype)
    return R


def _column_mean_var(X: sp.csr_matrix):
    n = X.shape[0]
    s = np.bincount(X.indices, weights=X.data, minlength=X.shape[1])
    s2 = np.bincount(X.indices, weights=np.square(X.data, dtype=np.float64), minlength=X.shape[1])
    mean = s / n
    var = np.maximum(s2 / n - mean**2, 0.0) * (n / max(n - 1, 1))
    return mean, var


def select_variable_genes(G: sp.csr_matrix, n_top: int = 2000) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes with the highest dispersion of log-normalised expression.

    Dispersion is variance / mean of ``log1p`` of library-size-normalised counts,
    z-scored within up to 20 bins of mean expression (at least ~50 genes per bin; Seurat v1 /
    scanpy ``flavor="seurat"``).
    Genes expressed in no cell are never selected.
    """
    X = normalize_log1p(sp.csr_matrix(G, dtype=np.float64))
    mean, var = _column_mean_var(X)
    expressed = mean > 0
    disp = np.zeros_like(mean)
    disp[expressed] = np.log(np.maximum(var[expressed], 1e-12) / mean[expressed])
    z = np.full_like(mean, -np.inf)
    if expressed.any():
        n_bins = int(np.clip(expressed.sum() // 50, 1, 20))  # at least ~50 genes per bin
        edges = np.quantile(mean[expressed], np.linspace(0, 1, n_bins + 1))
        bins = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, n_bins - 1)
        for b in np.unique(bins[expressed]):
            sel = expressed & (bins == b)
            d = disp[sel]
            sd = d.std()
            z[sel] = (d - d.mean()) / sd if sd > 0 else 0.0
    n_top = min(int(n_top), int(expressed.sum()))
    return np.sort(np.argsort(-z, kind="stable")[:n_top])


def select_accessible_regions(R: sp.csr_matrix, min_cells: int = 1, n_top: int | None = None) -> np.ndarray:
    """Indices (sorted) of regions open in at least ``min_cells`` cells, optionally only the ``n_top`` most open."""
    counts = np.bincount(R.indices, minlength=R.shape[1])
    keep = np.flatnonzero(counts >= min_cells)
    if n_top is not None and keep.size > n_top:
        keep = keep[np.argsort(-counts[keep], kind="stable")[:n_top]]
    return np.sort(keep)

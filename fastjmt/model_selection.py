"""Choosing K when the number of cell types is unknown: clustering stability over a small grid of K."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from .metrics import adjusted_rand_index

__all__ = ["KSelection", "select_k"]


@dataclass
class KSelection:
    """The outcome of :func:`select_k`.

    Attributes
    ----------
    k_values : ndarray of int
        The K tried (total columns: shared + RNA-only + ATAC-only).
    stability : ndarray, shape (len(k_values),)
        Mean adjusted Rand index between the pooled argmax clusters of every
        pair of subsampled fits, over the cells both subsamples hold.
    losses : ndarray, shape (len(k_values), n_seeds)
        Final loss of every fit.
    best_k : int
        The largest K whose stability is within ``tol`` of the best.
    """

    k_values: np.ndarray
    stability: np.ndarray
    losses: np.ndarray
    best_k: int

    def table(self) -> str:
        """The grid as text: K, stability, mean loss."""
        rows = [f"{'K':>4} {'stability':>10} {'mean loss':>12}"]
        for k, s, l in zip(self.k_values, self.stability, self.losses.mean(axis=1)):
            mark = "  <- best" if k == self.best_k else ""
            rows.append(f"{k:>4} {s:>10.4f} {l:>12.6g}{mark}")
        return "\n".join(rows)


def select_k(rna, atac, gene_activity, k_values: Sequence[int], n_rna_only: int = 0, n_atac_only: int = 0,
             n_seeds: int = 3, subsample: float = 0.8, tol: float = 0.02, random_state: Optional[int] = 0,
             **fit_kwargs) -> KSelection:
    """Pick K by the stability of the clusters under subsampling of cells.

    For every K in ``k_values`` the model is fitted ``n_seeds`` times, each time
    on a different random ``subsample`` of the RNA cells and of the ATAC cells
    (and with a different seed). A K that matches the data's structure gives
    the same clusters whatever the subsample; too small a K merges types and too
    large a K splits them, in ways that change from subsample to subsample. The
    score is the mean pairwise ARI of the pooled (RNA + ATAC) argmax labels
    over the cells two subsamples share (Ben-Hur, Elisseeff & Guyon 2002;
    Lange et al. 2004). The chosen K is the largest one whose stability is
    within ``tol`` of the highest: merging two clear types is as reproducible
    as keeping them apart, so several K up to the true one are often all
    stable, and the finest stable partition is the one wanted. The final losses
    are reported too but not used: they are not comparable across K (the
    reconstruction improves with K while the entropy and coupling terms move
    with it; on the simulator the total fell with K, on SNARE-seq cortex it
    rose).

    Parameters
    ----------
    rna, atac, gene_activity : matrices
        As for :func:`fastjmt.fit`.
    k_values : sequence of int
        Total numbers of columns to try; each must exceed ``n_rna_only + n_atac_only``.
    n_rna_only, n_atac_only : int
        Fixed numbers of modality-specific columns (the rest of K is shared).
    n_seeds : int, default 3
        Subsampled fits per K (at least 2).
    subsample : float, default 0.8
        Fraction of each modality's cells in every fit.
    tol : float, default 0.02
        Stability below the best by at most this much counts as equally stable.
    random_state : int or None
        Seed of the subsamples and of the fits.
    **fit_kwargs
        Passed to every :func:`fastjmt.fit` call (e.g. ``max_iter``, ``n_threads``).

    Returns
    -------
    KSelection

    Raises
    ------
    ValueError, TypeError
        Before any fit: the errors of :func:`fastjmt.fit` on the inputs as
        given, and a K in ``k_values`` larger than a subsample's cells.

    Examples
    --------
    >>> sel = fastjmt.select_k(rna, atac, ga, k_values=[4, 6, 8, 10, 12])  # doctest: +SKIP
    >>> print(sel.table()); res = fastjmt.fit(rna, atac, ga, n_shared=sel.best_k)  # doctest: +SKIP
    """
    from .api import fit
    from .errors import ConvergenceWarning
    from .validation import check_count, check_fraction, check_inputs, check_positive

    n_seeds = check_count(n_seeds, "n_seeds", 2)
    subsample = check_fraction(subsample, "subsample")
    n_rna_only = check_count(n_rna_only, "n_rna_only", 0)
    n_atac_only = check_count(n_atac_only, "n_atac_only", 0)
    ks = [check_count(k, "each of k_values", max(2, n_rna_only + n_atac_only + 1)) for k in k_values]
    tol = check_positive(tol, "tol", allow_zero=True)
    if not ks:
        raise ValueError("k_values must hold at least one K")
    for name in ("n_shared", "n_rna_only", "n_atac_only", "random_state", "n_init"):
        if name in fit_kwargs:
            raise ValueError(f"select_k sets {name} itself; do not pass it in fit_kwargs")
    # the checks of fit, on the matrices as given, before any subsample or fit
    check_inputs(rna, atac, gene_activity, min(ks), preprocess=bool(fit_kwargs.get("preprocess", True)))
    rna = rna if sp.issparse(rna) else np.asarray(rna)
    atac = atac if sp.issparse(atac) else np.asarray(atac)
    n_rna, n_atac = rna.shape[0], atac.shape[0]
    m_rna, m_atac = max(2, int(round(subsample * n_rna))), max(2, int(round(subsample * n_atac)))
    too_big = [k for k in ks if k > min(m_rna, m_atac)]
    if too_big:
        raise ValueError(f"k_values {too_big} exceed the cells of a subsample (subsample={subsample}: {m_rna} RNA and "
                         f"{m_atac} ATAC cells of {n_rna} and {n_atac}); use K <= {min(m_rna, m_atac)} or more cells")
    rng = np.random.default_rng(random_state)
    draws = []
    for _ in range(n_seeds):
        r = np.sort(rng.choice(n_rna, m_rna, replace=False))
        a = np.sort(rng.choice(n_atac, m_atac, replace=False))
        draws.append((r, a, int(rng.integers(2**31 - 1))))
    rna_csr = sp.csr_matrix(rna) if sp.issparse(rna) else rna
    atac_csr = sp.csr_matrix(atac) if sp.issparse(atac) else atac

    stability = np.empty(len(ks))
    losses = np.empty((len(ks), n_seeds))
    seen = set()
    for i, K in enumerate(ks):
        labels = []
        for s, (r, a, seed) in enumerate(draws):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = fit(rna_csr[r], atac_csr[a], gene_activity, n_shared=K - n_rna_only - n_atac_only,
                          n_rna_only=n_rna_only, n_atac_only=n_atac_only, random_state=seed,
                          **{"resolution": None, **fit_kwargs})
            for w in caught:  # once each, at the caller's line (convergence of the subsampled fits is not reported)
                key = (w.category, str(w.message).split(":")[0])
                if not issubclass(w.category, ConvergenceWarning) and key not in seen:
                    seen.add(key)
                    warnings.warn(w.message, w.category, stacklevel=2)
            losses[i, s] = res.loss
            lr = np.full(n_rna, -1, dtype=np.int64)
            la = np.full(n_atac, -1, dtype=np.int64)
            lr[r], la[a] = res.columns_rna, res.columns_atac  # the K-column partition, unmerged
            labels.append(np.concatenate([lr, la]))
        aris = []
        for x, y in combinations(labels, 2):
            both = (x >= 0) & (y >= 0)
            aris.append(adjusted_rand_index(x[both], y[both]))
        stability[i] = float(np.mean(aris))
    order = np.argsort(ks, kind="stable")
    ks_sorted = np.asarray(ks)[order]
    stab_sorted = stability[order]
    best = int(ks_sorted[stab_sorted >= stab_sorted.max() - tol][-1])
    return KSelection(k_values=ks_sorted, stability=stab_sorted, losses=losses[order], best_k=best)

"""Clustering agreement scores (no scikit-learn needed): ARI and NMI."""

from __future__ import annotations

import numpy as np


def _contingency(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"label arrays must be 1-D and of one length, got {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1 if ai.size else 0, bi.max() + 1 if bi.size else 0), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)
    return table


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings; 1 = identical up to renaming."""
    t = _contingency(labels_true, labels_pred)
    n = t.sum()
    if n < 2:
        return 1.0

    def comb2(x):
        x = np.asarray(x, dtype=np.float64)
        return x * (x - 1) / 2

    sum_cells = comb2(t).sum()
    sum_a = comb2(t.sum(axis=1)).sum()
    sum_b = comb2(t.sum(axis=0)).sum()
    expected = sum_a * sum_b / comb2(n)
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:
        return 1.0
    return float((sum_cells - expected) / (max_index - expected))


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """Normalised mutual information (arithmetic-mean normalisation, as scikit-learn's default)."""
    t = _contingency(labels_true, labels_pred).astype(np.float64)
    n = t.sum()
    if n == 0:
        return 1.0
    pa, pb = t.sum(axis=1) / n, t.sum(axis=0) / n
    nz = t > 0
    pij = t[nz] / n
    mi = float(np.sum(pij * np.log(pij / np.outer(pa, pb)[nz])))
    ha = -float(np.sum(pa[pa > 0] * np.log(pa[pa > 0])))
    hb = -float(np.sum(pb[pb > 0] * np.log(pb[pb > 0])))
    if ha == 0 and hb == 0:
        return 1.0
    denom = (ha + hb) / 2
    return max(0.0, mi / denom) if denom > 0 else 0.0


def pooled_scores(result, rna_labels, atac_labels) -> dict:
    """ARI and NMI of a fit's argmax clusters against true labels: per modality and pooled.

    Pooled scores put RNA and ATAC cells in one labelling, so they are high only
    when a cell type lands in the same column of K in both modalities.
    """
    rna_labels = np.asarray(rna_labels).astype(str)
    atac_labels = np.asarray(atac_labels).astype(str)
    pr, pa = result.labels_rna, result.labels_atac
    pooled_t = np.concatenate([rna_labels, atac_labels])
    pooled_p = np.concatenate([pr, pa])
    return {
        "ari_rna": adjusted_rand_index(rna_labels, pr),
        "ari_atac": adjusted_rand_index(atac_labels, pa),
        "ari_pooled": adjusted_rand_index(pooled_t, pooled_p),
        "nmi_rna": normalized_mutual_info(rna_labels, pr),
        "nmi_atac": normalized_mutual_info(atac_labels, pa),
        "nmi_pooled": normalized_mutual_info(pooled_t, pooled_p),
    }

"""Clustering agreement scores (no scikit-learn needed): ARI, NMI, and integration scores of two modalities."""

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


def wrong_modality_share(true_rna, true_atac, pred_rna, pred_atac) -> tuple:
    """Share of cells put in a cluster of a type their modality does not have.

    Every predicted cluster is named after the most frequent true type among
    all its cells (both modalities). An ATAC cell in a cluster named after a type
    no ATAC cell has (an RNA-only type) is misplaced, and likewise for RNA.
    Works for argmax columns and graph communities alike.

    Returns
    -------
    atac_in_rna_only, rna_in_atac_only : float
    """
    true_rna, true_atac = np.asarray(true_rna).astype(str), np.asarray(true_atac).astype(str)
    pred_rna, pred_atac = np.asarray(pred_rna), np.asarray(pred_atac)
    if true_rna.shape != pred_rna.shape or true_atac.shape != pred_atac.shape:
        raise ValueError("each modality needs one predicted label per true label")
    types, t = np.unique(np.concatenate([true_rna, true_atac]), return_inverse=True)
    clusters, c = np.unique(np.concatenate([pred_rna, pred_atac]), return_inverse=True)
    table = np.zeros((clusters.size, types.size), dtype=np.int64)
    np.add.at(table, (c, t), 1)
    name = table.argmax(axis=1)  # majority type of each cluster (ties: the first type)
    n_rna = true_rna.size
    in_rna = np.isin(types, true_rna)
    in_atac = np.isin(types, true_atac)
    atac_bad = ~in_atac[name[c[n_rna:]]]
    rna_bad = ~in_rna[name[c[:n_rna]]]
    return (float(atac_bad.mean()) if atac_bad.size else 0.0, float(rna_bad.mean()) if rna_bad.size else 0.0)


def integration_scores(true_rna, true_atac, pred_rna, pred_atac) -> dict:
    """ARI and NMI per modality and pooled, and the wrong-modality shares, of one labelling of both modalities.

    ``pred_rna`` and ``pred_atac`` must be in one label space (same cluster, same
    label in both), as :func:`fastjmt.cluster_cells` returns them.
    """
    true_rna, true_atac = np.asarray(true_rna).astype(str), np.asarray(true_atac).astype(str)
    pred_rna, pred_atac = np.asarray(pred_rna), np.asarray(pred_atac)
    pooled_t = np.concatenate([true_rna, true_atac])
    pooled_p = np.concatenate([pred_rna, pred_atac])
    a_in_r, r_in_a = wrong_modality_share(true_rna, true_atac, pred_rna, pred_atac)
    return {
        "ari_rna": adjusted_rand_index(true_rna, pred_rna),
        "ari_atac": adjusted_rand_index(true_atac, pred_atac),
        "ari_pooled": adjusted_rand_index(pooled_t, pooled_p),
        "nmi_rna": normalized_mutual_info(true_rna, pred_rna),
        "nmi_atac": normalized_mutual_info(true_atac, pred_atac),
        "nmi_pooled": normalized_mutual_info(pooled_t, pooled_p),
        "atac_in_rna_only": a_in_r,
        "rna_in_atac_only": r_in_a,
        "n_clusters": int(np.unique(pooled_p).size),
    }


def pooled_scores(result, rna_labels, atac_labels) -> dict:
    """ARI and NMI of a fit's argmax clusters against true labels: per modality and pooled.

    Pooled scores put RNA and ATAC cells in one labelling, so they are high only
    when a cell type lands in the same column of K in both modalities.
    """
    s = integration_scores(rna_labels, atac_labels, result.labels_rna, result.labels_atac)
    return {k: s[k] for k in ("ari_rna", "ari_atac", "ari_pooled", "nmi_rna", "nmi_atac", "nmi_pooled")}

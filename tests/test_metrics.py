import numpy as np
import pytest

from fastjmt.metrics import adjusted_rand_index, normalized_mutual_info


def test_ari_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    # classic example: a=[0,0,0,1,1,1], b=[0,0,1,1,2,2] -> ARI = 0.24242...
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.2424242424)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 20000), rng.integers(0, 5, 20000)
    assert abs(adjusted_rand_index(a, b)) < 0.01
    assert adjusted_rand_index(["x", "y", "x"], [2, 5, 2]) == 1.0


def test_nmi_known_values():
    assert normalized_mutual_info([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # a=[0,0,1,1], b=[0,1,0,1]: independent -> 0
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # a=[0,0,0,1,1,1], b=[0,0,1,1,2,2]: MI = log2 - (1/3)... compare with a direct computation
    a, b = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[2, 1, 0], [0, 1, 2]]) / 6
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = np.sum(p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz]))
    h = lambda q: -np.sum(q[q > 0] * np.log(q[q > 0]))  # noqa: E731
    assert normalized_mutual_info(a, b) == pytest.approx(mi / ((h(pa) + h(pb)) / 2))


def test_length_mismatch():
    with pytest.raises(ValueError):
        adjusted_rand_index([0, 1], [0])


def test_wrong_modality_share_counts_cells_in_other_modality_types():
    from fastjmt.metrics import wrong_modality_share

    true_rna = np.array(["a", "a", "b", "b", "r", "r"])  # "r": RNA-only type
    true_atac = np.array(["a", "b", "b", "a"])
    pred_rna = np.array([0, 0, 1, 1, 2, 2])
    pred_atac = np.array([0, 1, 2, 2])  # two ATAC cells land in the cluster named "r"
    a_in_r, r_in_a = wrong_modality_share(true_rna, true_atac, pred_rna, pred_atac)
    assert a_in_r == 0.5
    assert r_in_a == 0.0
    # an ATAC-only type the other way round
    a_in_r, r_in_a = wrong_modality_share(true_atac, true_rna, pred_atac, pred_rna)
    assert (a_in_r, r_in_a) == (0.0, 0.5)


def test_integration_scores_pooled_needs_one_label_space():
    from fastjmt.metrics import integration_scores

    t = np.array(["x"] * 5 + ["y"] * 5)
    s = integration_scores(t, t, np.r_[[0] * 5, [1] * 5], np.r_[[1] * 5, [0] * 5])  # swapped columns in ATAC
    assert s["ari_rna"] == 1.0 and s["ari_atac"] == 1.0
    assert s["ari_pooled"] < 0.1
    assert s["n_clusters"] == 2
    s = integration_scores(t, t, np.r_[[0] * 5, [1] * 5], np.r_[[0] * 5, [1] * 5])
    assert s["ari_pooled"] == 1.0 and s["nmi_pooled"] == pytest.approx(1.0)

"""The joint start (init="joint"): gene scores, the CCA, neighbour votes and the prior k-means, each against a plain
NumPy twin; and what the start is for (ATAC cells aligned with their RNA type)."""

import numpy as np
import pytest
import scipy.sparse as sp

import fastjmt
from fastjmt import preprocess as pp
from fastjmt.problem import build_problem
from fastjmt.initialize import cca_embeddings, gene_scores, neighbor_votes, prior_kmeans

from conftest import WEIGHTS


def _csr(X):
    return (X.indptr, X.indices, X.data)


def _zscore(D):
    sd = D.std(0)
    keep = sd > 0
    Z = np.zeros_like(D)
    Z[:, keep] = (D[:, keep] - D[:, keep].mean(0)) / sd[keep]
    return Z, keep


def _small_problem(seed=0, n=60, genes=25, regions=40):
    rng = np.random.default_rng(seed)
    G = pp.to_csr(sp.random(n, genes, density=0.3, random_state=rng) * 5)
    R = pp.to_csr(sp.random(n + 5, regions, density=0.2, random_state=rng))
    R.data[:] = 1
    A = pp.to_csr(sp.random(genes, regions, density=0.1, random_state=rng))
    A.data[:] = 1
    A = pp.preprocess_gene_activity(A)
    return build_problem(G, R, A, 2, 0, 0, WEIGHTS, np.float64), G, R, A


def test_gene_scores_are_log_normalised_R_times_A_transposed():
    problem, G, R, A = _small_problem()
    indptr, indices, data = gene_scores(problem)
    got = sp.csr_matrix((data, indices, indptr), shape=(R.shape[0], G.shape[1])).toarray()
    D = R.toarray() @ A.toarray().T
    lib = D.sum(1)
    target = np.median(lib[lib > 0])
    want = np.log1p(D * np.divide(target, lib, out=np.zeros_like(lib), where=lib > 0)[:, None])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cca_embeddings_are_the_singular_vectors_of_the_standardised_cross_product():
    rng = np.random.default_rng(3)
    # a shared low-rank structure over 30 genes, so the top singular values are well separated
    Lr, La, F = rng.normal(size=(80, 3)), rng.normal(size=(70, 3)), rng.normal(size=(3, 30)) * [[6], [4], [2]]
    Xr = sp.csr_matrix(np.abs(Lr @ F + rng.normal(size=(80, 30)) * 0.1))
    Xa = sp.csr_matrix(np.abs(La @ F + rng.normal(size=(70, 30)) * 0.1))
    Xa[:, 29] = 0.0  # a gene that does not vary in one modality is left out
    Xa = sp.csr_matrix(Xa)
    er, ea = cca_embeddings(_csr(Xr), _csr(Xa), 30, 3, np.random.default_rng(0), n_power_iter=8)
    Zr, kr = _zscore(Xr.toarray())
    Za, ka = _zscore(Xa.toarray())
    keep = kr & ka
    U, s, Vt = np.linalg.svd(Zr[:, keep] @ Za[:, keep].T)
    for E, Q in ((er, U[:, :3]), (ea, Vt[:3].T)):
        want = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        # each column equal up to its sign
        signs = np.sign(np.sum(E * want, axis=0))
        np.testing.assert_allclose(E, want * signs, atol=1e-6)


def test_cca_on_row_subsets_stays_close_to_the_full_cca():
    rng = np.random.default_rng(4)
    Lr, La, F = rng.normal(size=(300, 2)), rng.normal(size=(250, 2)), rng.normal(size=(2, 40)) * [[6], [3]]
    Xr = sp.csr_matrix(np.abs(Lr @ F + rng.normal(size=(300, 40)) * 0.1))
    Xa = sp.csr_matrix(np.abs(La @ F + rng.normal(size=(250, 40)) * 0.1))
    full = cca_embeddings(_csr(Xr), _csr(Xa), 40, 2, np.random.default_rng(0), n_power_iter=6)
    sub = cca_embeddings(_csr(Xr), _csr(Xa), 40, 2, np.random.default_rng(0), n_power_iter=6, max_fit_rows=150)
    for a, b in zip(full, sub):
        assert a.shape == b.shape
        # same 2-D directions up to a rotation: the projection of one on the other keeps the norm
        Q, _ = np.linalg.qr(a)
        assert np.linalg.norm(b - Q @ (Q.T @ b)) < 0.1 * np.linalg.norm(b)


def test_cca_needs_genes_that_vary_in_both():
    X = sp.csr_matrix(np.ones((5, 4)))
    assert cca_embeddings(_csr(X), _csr(X), 4, 2, np.random.default_rng(0)) == (None, None)


def test_neighbor_votes_count_the_columns_of_the_nearest_rna_cells():
    rng = np.random.default_rng(5)
    emb_rna, emb_atac = rng.normal(size=(40, 3)), rng.normal(size=(25, 3))
    rna_cols = rng.integers(0, 4, 40)
    votes = neighbor_votes(emb_atac, emb_rna, rna_cols, 5, 7, 1)
    d = ((emb_atac[:, None] - emb_rna[None]) ** 2).sum(-1)
    nn = np.argsort(d, axis=1)[:, :7]
    want = np.zeros((25, 5))
    for i in range(25):
        for j in nn[i]:
            want[i, rna_cols[j]] += 1
    np.testing.assert_array_equal(votes, want)


def test_prior_kmeans_matches_a_plain_loop():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 2)) + np.repeat(np.eye(2) * 3, 60, axis=0)
    log_prior = np.log(rng.dirichlet(np.ones(3), size=120))
    init = rng.integers(0, 3, 120)
    got = prior_kmeans(X, log_prior, init, 0.5)
    lab = init.copy()
    centers = np.zeros((3, 2))
    for _ in range(100):
        for k in range(3):
            if np.any(lab == k):
                centers[k] = X[lab == k].mean(0)
        cost = ((X[:, None] - centers[None]) ** 2).sum(-1) - 0.5 * log_prior
        new = cost.argmin(1)
        if np.array_equal(new, lab):
            break
        lab = new
    np.testing.assert_array_equal(got, lab)


def test_prior_kmeans_with_a_strong_prior_follows_the_prior():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(50, 2))
    prior = np.full((50, 2), 1e-6)
    prior[np.arange(50), np.arange(50) % 2] = 1.0
    lab = prior_kmeans(X, np.log(prior), np.zeros(50, np.int64), 10.0)
    np.testing.assert_array_equal(lab, np.arange(50) % 2)


def test_joint_start_aligns_noisy_atac_better_than_the_spectral_start():
    # 70 % of each ATAC cell's open regions moved at random: ATAC clustered alone is weak, the RNA votes carry it
    d = fastjmt.simulate(n_rna=600, n_atac=600, n_genes=400, n_regions=1200, n_shared=4, atac_noise=0.7,
                         random_state=0)
    kw = dict(n_shared=4, max_iter=1, learning_rate=1e-9, resolution=None, random_state=0)
    ari = {}
    for init in ("joint", "spectral"):
        res = fastjmt.fit(d.rna, d.atac, d.gene_activity, init=init, **kw)
        ari[init] = fastjmt.adjusted_rand_index(d.atac_labels, res.columns_atac)
    assert ari["joint"] > ari["spectral"] + 0.1, ari


def test_joint_start_keeps_atac_cells_out_of_rna_only_columns():
    d = fastjmt.simulate(n_rna=500, n_atac=500, n_genes=300, n_regions=900, n_shared=2, n_rna_only=1,
                         random_state=1)
    res = fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=2, n_rna_only=1, max_iter=1, resolution=None,
                      learning_rate=1e-9)
    assert np.all(res.columns_atac != 2)
    assert fastjmt.adjusted_rand_index(d.atac_labels, res.columns_atac) > 0.9


@pytest.mark.parametrize("layout", [(2, 0, 1), (2, 1, 1)])
def test_joint_start_with_atac_only_types(layout):
    ns, nr, na = layout
    d = fastjmt.simulate(n_rna=500, n_atac=500, n_genes=300, n_regions=900, n_shared=ns, n_rna_only=nr,
                         n_atac_only=na, random_state=2)
    res = fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=ns, n_rna_only=nr, n_atac_only=na, max_iter=1,
                      resolution=None, learning_rate=1e-9)
    s = fastjmt.integration_scores(d.rna_labels, d.atac_labels, res.columns_rna, res.columns_atac)
    assert s["ari_atac"] > 0.9 and s["ari_pooled"] > 0.9, s
    assert np.all(res.columns_rna < ns + nr)  # no RNA cell in an ATAC-only column


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.filterwarnings("ignore::fastjmt.ConvergenceWarning")  # one epoch: the start is what is measured
def test_rna_start_is_not_split_by_sequencing_depth(seed):
    # deep RNA (10,000 UMIs per cell over 3,000 genes), 20 types: the log-normalised RNA's first component is the
    # cells' depth; clustered with it, the start's RNA ARI was 0.65 (seed 0) and 0.73 (seed 1)
    d = fastjmt.simulate(n_rna=2000, n_atac=2000, n_genes=3000, n_regions=4000, n_shared=20, separation=0.6,
                         rna_depth=10_000, atac_accessibility=0.03, sampling="sparse", random_state=0)
    res = fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=20, max_iter=1, learning_rate=1e-9, resolution=None,
                      random_state=seed)
    assert fastjmt.adjusted_rand_index(d.rna_labels, res.columns_rna) > 0.95


def test_gene_scores_in_blocks_equal_the_whole_matrix(monkeypatch):
    """Above max_fit_rows the ATAC gene scores are made for the subset and in blocks, never whole: the same
    library-size target, column statistics and CCA embeddings as with the whole matrix."""
    from fastjmt import initialize as ini

    problem, G, R, A = _small_problem(seed=3, n=400, genes=60, regions=90)
    monkeypatch.setattr(ini, "GENE_SCORE_BLOCK_NNZ", 97)  # many small blocks
    gs = ini.GeneScores(problem)
    assert len(list(gs.blocks())) > 5
    assert sum(b.stop - b.start for b in gs.blocks()) == R.shape[0]
    whole = gene_scores(problem)
    mean, sd = ini._csr_col_stats(whole, 60)
    gs.set_target()
    bmean, bsd = gs.col_stats()
    np.testing.assert_allclose(bmean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bsd, sd, rtol=1e-10, atol=1e-12)
    for (a0, a1, a2), (b0, b1, b2) in ((gs.rows(slice(10, 50)), whole), ):
        np.testing.assert_array_equal(a0 - a0[0], b0[10:51] - b0[10])
        np.testing.assert_allclose(a2, b2[b0[10]:b0[50]], rtol=1e-12)
    monkeypatch.setattr(ini, "GENE_SCORE_ROWS", 7)  # the subset's rows, a few at a time
    subset = np.sort(np.random.default_rng(2).choice(R.shape[0], 150, replace=False))
    gs.target = None
    gs.set_target()
    a0, a1, a2 = gs.rows(subset)
    W = sp.csr_matrix((whole[2], whole[1], whole[0]), shape=(R.shape[0], 60))[subset]
    np.testing.assert_array_equal(a0, W.indptr)
    np.testing.assert_array_equal(a1, W.indices)
    np.testing.assert_allclose(a2, W.data, rtol=1e-12)
    monkeypatch.setattr(ini, "COL_STATS_BLOCK_NNZ", 50)  # the RNA's column statistics in blocks too
    np.testing.assert_allclose(ini._csr_col_stats(whole, 60)[1], sd, rtol=1e-9)
    got = cca_embeddings(problem.rna.X, ini.GeneScores(problem), 60, 3, np.random.default_rng(1), max_fit_rows=200)
    want = cca_embeddings(problem.rna.X, whole, 60, 3, np.random.default_rng(1), max_fit_rows=200)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8)

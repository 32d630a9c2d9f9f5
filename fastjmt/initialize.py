"""Starting points for the factors: ``"spectral"`` (the default) and ``"random"`` (the paper's).

``"spectral"`` clusters each modality on its own and then decides which RNA
cluster is which ATAC cluster:

1. a randomized truncated SVD of each modality, with implicit centering and
   scaling (log-normalised RNA; TF-IDF ATAC) — only sparse × thin-dense
   products, never a dense cells × features array;
2. k-means (k-means++ seeding, several starts) on the L2-normalised embedding,
   with ``n_shared + n_rna_only`` RNA clusters and ``n_shared + n_atac_only``
   ATAC clusters; RNA components that follow the cells' sequencing depth
   (:data:`DEPTH_MAX_CORR`) are left out first;
3. cluster profiles in gene space: mean RNA expression per RNA cluster, and
   mean accessibility per ATAC cluster carried to genes through the gene
   activity matrix ``A``; the pairs of RNA and ATAC clusters whose profiles
   correlate best (an optimal assignment) become the shared columns, the rest
   the modality-specific columns;
4. cell logits ``init_scale`` × one-hot of that column, feature logits
   ``init_scale`` × z-score of each feature's cluster profile, and ``S`` and
   the biases by least squares given those memberships.

``"random"`` draws every logit from N(0, 1) (the paper's Algorithm 1) and
sets ``S`` and the biases by the same least squares.
"""

from __future__ import annotations

import numpy as np

from .objective import fit_association
from .preprocess import tfidf_scales
from .problem import MODALITIES, Factors, Problem, softmax
from .products import spmm, spmm_t, spmm_t_full


# --------------------------------------------------------------------------- products in the data's dtype


def _product(csr, B, rows=None):
    """``X[rows] B`` (float64 out; all rows by default) with ``B`` cast to the dtype of ``X``'s values.

    The initialisation works in float64, but its sparse products run in the
    fit's dtype, so a float32 fit compiles each kernel once, not twice.
    """
    if rows is None:
        rows = np.arange(csr[0].shape[0] - 1, dtype=np.int64)
    B = np.ascontiguousarray(B, dtype=csr[2].dtype)
    return spmm(csr, rows, np.ones(B.shape[0], np.uint8), B).astype(np.float64)


def _product_t(X, Xt, p, U, rows=None):
    """``X[rows]ᵀ U`` (float64 out; all rows by default), ``U`` cast to the data's dtype (see :func:`_product`)."""
    U = np.ascontiguousarray(U, dtype=X[2].dtype)
    if rows is None:
        return spmm_t_full(X, Xt, p, U).astype(np.float64)
    row_mask = np.zeros(X[0].shape[0] - 1, np.uint8)
    row_mask[rows] = 1
    return spmm_t(X, Xt, rows, row_mask, np.arange(p, dtype=np.int64), np.ones(p, np.uint8), U).astype(np.float64)


# --------------------------------------------------------------------------- implicit SVD


def _scaled_product(csr, rows_scale, cols_scale, mean, B, rows=None):
    """``(diag(r) X diag(w) − 1 μᵀ) B`` (over ``rows``, all by default) for CSR arrays of ``X`` without forming it."""
    out = _product(csr, cols_scale[:, None] * B, rows)
    out *= rows_scale[:, None] if rows is None else rows_scale[rows, None]
    out -= mean @ B
    return out


#: power iterations of the randomized SVDs (:func:`implicit_svd`, :func:`cca_embeddings`). With 3, the range finder
#: missed part of the top subspace where the singular values decay slowly: on the package's simulator at separation
#: 0.4 the ATAC k-means ARI was 0.84 with 3 and 0.94 with 10 (and with 100 components computed); docs/quality.md.
SVD_POWER_ITER = 10


def implicit_svd(mod_X, mod_Xt, row_scale, col_scale, rank, rng, n_power_iter=None, max_fit_rows=20_000):
    """Top ``rank`` left singular vectors × singular values of ``diag(r) X diag(w)``, column-centred.

    Randomized range finder (Halko et al.) with power iterations; the centred,
    scaled matrix is only ever applied to thin dense blocks. ``mod_Xt`` (the CSR
    of ``Xᵀ``) may be None: the transposed products then scatter from ``X``.

    With more than ``max_fit_rows`` rows, the range finder and the SVD see a
    random subset of that many rows, and every row is then projected on the
    subset's top right singular vectors (one more pass over the data), so the
    power iterations' cost stops growing with the number of cells.
    """
    n_power_iter = SVD_POWER_ITER if n_power_iter is None else n_power_iter
    n = mod_X[0].shape[0] - 1
    p = col_scale.shape[0]
    mean = col_scale * _product_t(mod_X, mod_Xt, p, row_scale[:, None])[:, 0] / n
    mean = mean[None, :]
    rows = None
    if n > max_fit_rows:
        rows = np.sort(rng.choice(n, size=max_fit_rows, replace=False)).astype(np.int64)
    scale_rows = row_scale if rows is None else row_scale[rows]

    def M(B):
        return _scaled_product(mod_X, row_scale, col_scale, mean, B, rows)

    def MT(B):
        out = _product_t(mod_X, mod_Xt, p, scale_rows[:, None] * B, rows)
        out *= col_scale[:, None]
        out -= mean.T @ B.sum(axis=0, keepdims=True)
        return out

    m = n if rows is None else rows.shape[0]
    ell = min(rank + 10, m, p)
    Q = M(rng.standard_normal((p, ell)))
    Q, _ = np.linalg.qr(Q)
    for _ in range(n_power_iter):
        Q, _ = np.linalg.qr(MT(Q))
        Q, _ = np.linalg.qr(M(Q))
    Bt = MT(Q)  # p × ell, = (Qᵀ M)ᵀ
    Ub, s, Vt = np.linalg.svd(Bt.T, full_matrices=False)
    k = min(rank, s.shape[0])
    if rows is None:
        return (Q @ Ub[:, :k]) * s[:k]
    return _scaled_product(mod_X, row_scale, col_scale, mean, np.ascontiguousarray(Vt[:k].T))


# --------------------------------------------------------------------------- sequencing depth

#: an RNA SVD component whose |correlation| with the cells' log count of detected genes is above this is left
#: out of the k-means. Log-normalised counts keep such a component (a low-depth cell has more zeros whatever its
#: type); on the package's simulator at rna_depth 10,000 it is the first one, |r| 0.99–1.00, with the largest
#: variance, and the k-means split the cells by depth and merged types (start RNA ARI 0.73 at 10,000 cells, 0.64
#: at 40,000; 1.000 without it). Not applied to ATAC: on sim_symsim_rna3_atac2 an LSI component at |r| 0.88
#: separates the types. ArchR drops LSI components above 0.75 (its corCutOff); 0.9 keeps any component that is
#: only partly depth.
DEPTH_MAX_CORR = 0.9


def depth_correlations(emb, depth):
    """|Pearson r| of each column of ``emb`` with ``log1p(depth)`` (0 where either is constant)."""
    out = np.zeros(emb.shape[1])
    d = np.log1p(np.asarray(depth, dtype=np.float64))
    if d.size == 0 or d.min() == d.max():
        return out
    d -= d.mean()
    E = emb - emb.mean(axis=0)
    denom = np.linalg.norm(E, axis=0) * np.linalg.norm(d)
    np.divide(np.abs(d @ E), denom, out=out, where=denom > 0)
    return out


def drop_depth_components(emb, depth, max_corr=None):
    """The columns of ``emb`` whose correlation with log depth is at most ``max_corr``.

    All of them when fewer than two would be left.
    """
    max_corr = DEPTH_MAX_CORR if max_corr is None else max_corr
    keep = depth_correlations(emb, depth) <= max_corr
    if keep.sum() < 2 or keep.all():
        return emb
    return np.ascontiguousarray(emb[:, keep])


# --------------------------------------------------------------------------- k-means


def nearest_centers(X, centers, labels, sq_dist, chunk=1 << 16, x_sq=None):
    """Nearest row of ``centers`` for every row of ``X``: writes ``labels`` and the squared distance.

    ``|x − c|² = |x|² − 2 x·c + |c|²`` with the cross term from one matrix
    product per run of ``chunk`` rows (BLAS; the embeddings are low-dimensional
    and dense), clipped at 0 against rounding. ``x_sq``: the rows' ``|x|²`` when
    the caller has them.
    """
    cc = np.einsum("ij,ij->i", centers, centers)
    for a in range(0, X.shape[0], chunk):
        Xa = X[a:a + chunk]
        D = Xa @ (-2.0 * centers.T)
        D += cc
        lab = D.argmin(axis=1)
        labels[a:a + chunk] = lab
        xs = np.einsum("ij,ij->i", Xa, Xa) if x_sq is None else x_sq[a:a + chunk]
        sq_dist[a:a + chunk] = np.maximum(D[np.arange(lab.shape[0]), lab] + xs, 0.0)


def kmeans(X, k, rng, n_init=10, max_iter=100, max_fit_rows=20_000):
    """Lloyd's k-means with k-means++ seeding; the labels of the start with the lowest inertia.

    With more than ``max_fit_rows`` rows the centres are fitted on a random
    subset of that size and every row is then assigned to its nearest centre
    (the cost stops growing with the number of cells). Centre sums are one
    matrix product with the one-hot labels; the seeding keeps each row's
    distance to its nearest centre so far (one distance per new centre).
    """
    if X.shape[0] > max_fit_rows:
        sub = np.sort(rng.choice(X.shape[0], size=max_fit_rows, replace=False))
        lab_sub = kmeans(X[sub], k, rng, n_init, max_iter, max_fit_rows)
        centers = np.stack([X[sub][lab_sub == c].mean(axis=0) if np.any(lab_sub == c) else X[sub[0]]
                            for c in range(min(k, max_fit_rows))])
        labels = np.empty(X.shape[0], dtype=np.int64)
        nearest_centers(X, centers, labels, np.empty(X.shape[0]))
        return labels
    n = X.shape[0]
    k = min(k, n)
    labels = np.empty(n, dtype=np.int64)
    d2 = np.empty(n)
    x_sq = np.einsum("ij,ij->i", X, X)
    onehot = np.zeros((k, n))
    rows = np.arange(n)
    best_labels, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = np.empty((k, X.shape[1]))
        centers[0] = X[rng.integers(n)]
        d2[:] = np.maximum(x_sq - 2.0 * (X @ centers[0]) + centers[0] @ centers[0], 0.0)
        for c in range(1, k):
            tot = d2.sum()
            idx = rng.choice(n, p=d2 / tot) if tot > 0 else rng.integers(n)
            centers[c] = X[idx]
            np.minimum(d2, np.maximum(x_sq - 2.0 * (X @ centers[c]) + centers[c] @ centers[c], 0.0), out=d2)
        prev = None
        for _ in range(max_iter):
            nearest_centers(X, centers, labels, d2, x_sq=x_sq)
            if prev is not None and np.array_equal(prev, labels):
                break
            prev = labels.copy()
            onehot[:] = 0
            onehot[labels, rows] = 1.0
            counts = onehot.sum(axis=1)
            sums = onehot @ X
            empty = counts == 0
            centers[~empty] = sums[~empty] / counts[~empty, None]
            if empty.any():  # re-seed empty clusters at the worst-fitted points
                far = np.argsort(d2)[::-1][: int(empty.sum())]
                centers[empty] = X[far]
        inertia = d2.sum()
        if inertia < best_inertia:
            best_inertia, best_labels = inertia, labels.copy()
    return best_labels


# --------------------------------------------------------------------------- matching


def _cluster_profiles(mod, labels, k):
    """Mean of the rows of ``X`` per cluster, as a features × k array."""
    H = np.zeros((mod.n, k))
    H[np.arange(mod.n), labels] = 1.0
    counts = np.maximum(H.sum(axis=0), 1.0)
    return _product_t(mod.X, mod.Xt, mod.p, H / counts)


def _centered_corr(P, Q):
    """Pearson correlation between the columns of ``P`` and ``Q`` after centring each row (feature)."""
    P = P - P.mean(axis=1, keepdims=True)
    Q = Q - Q.mean(axis=1, keepdims=True)
    P = P - P.mean(axis=0)
    Q = Q - Q.mean(axis=0)
    nP = np.linalg.norm(P, axis=0)
    nQ = np.linalg.norm(Q, axis=0)
    return (P.T @ Q) / np.maximum(np.outer(nP, nQ), 1e-300)


def match_clusters(corr, n_shared):
    """Pair RNA clusters (rows of ``corr``) with ATAC clusters (columns): the ``n_shared`` best pairs.

    Returns ``rna_cols, atac_cols``: the column of K each RNA / ATAC cluster goes to.
    Shared pairs take columns ``0 … n_shared−1`` (best-correlated first), unpaired
    RNA clusters the next ones, unpaired ATAC clusters the last ones.
    """
    from scipy.optimize import linear_sum_assignment  # imported here: keeps `import fastjmt` cheap

    kr, ka = corr.shape
    ri, ai = linear_sum_assignment(-corr)
    order = np.argsort(-corr[ri, ai], kind="stable")[:n_shared]
    rna_cols = np.full(kr, -1, dtype=np.int64)
    atac_cols = np.full(ka, -1, dtype=np.int64)
    for col, t in enumerate(order):
        rna_cols[ri[t]] = col
        atac_cols[ai[t]] = col
    nxt = n_shared
    for r in range(kr):
        if rna_cols[r] < 0:
            rna_cols[r] = nxt
            nxt += 1
    for a in range(ka):
        if atac_cols[a] < 0:
            atac_cols[a] = nxt
            nxt += 1
    return rna_cols, atac_cols


# --------------------------------------------------------------------------- S and biases


def fit_S_and_biases(mod, f: Factors):
    """Least-squares ``S`` and closed-form biases of the start (:func:`fastjmt.objective.fit_association`)."""
    fit_association(mod, f)


# --------------------------------------------------------------------------- entry point


def _empty_factors(n, p, K, dtype):
    return Factors(
        np.zeros((n, K), dtype), np.zeros((n, K), dtype), np.zeros((p, K), dtype), np.zeros((p, K), dtype),
        np.zeros((K, K), dtype), np.zeros(n, dtype), np.zeros(p, dtype),
    )


def _feature_logits(profile, cols, K, scale):
    """Logits of features from their per-cluster mean profile (features × k), z-scored across clusters."""
    p = profile.shape[0]
    Z = np.full((p, K), -scale, dtype=np.float64)
    if profile.shape[1] > 1:
        mu = profile.mean(axis=1, keepdims=True)
        sd = profile.std(axis=1, keepdims=True)
        z = (profile - mu) / np.where(sd > 0, sd, 1.0)
    else:
        z = np.zeros_like(profile)
    Z[:, cols] = scale * z
    return Z


def initialize(problem: Problem, n_shared: int, n_rna_only: int, n_atac_only: int, method: str,
               rng: np.random.Generator, init_scale: float = 2.0) -> dict:
    """Starting factors for both modalities (a dict ``{"atac": Factors, "rna": Factors}``)."""
    K, dt = problem.K, problem.dtype
    params = {m: _empty_factors(problem.modality(m).n, problem.modality(m).p, K, dt) for m in MODALITIES}
    if method == "random":
        for m in MODALITIES:
            f = params[m]
            f.Z[:] = rng.standard_normal(f.Z.shape)
            f.Zf[:] = rng.standard_normal(f.Zf.shape)
    elif method in ("joint", "spectral"):
        _spectral(problem, params, n_shared, n_rna_only, n_atac_only, rng, init_scale, joint=method == "joint")
    else:
        raise ValueError(f"init must be 'joint', 'spectral' or 'random', got {method!r}")
    for m in MODALITIES:
        f = params[m]
        f.C[:] = softmax(f.Z)
        f.Cf[:] = softmax(f.Zf)
        fit_S_and_biases(problem.modality(m), f)
    return params


def _spectral(problem, params, n_shared, n_rna_only, n_atac_only, rng, scale, joint=False):
    K = problem.K
    rna, atac = problem.rna, problem.atac
    k_r, k_a = n_shared + n_rna_only, n_shared + n_atac_only
    joint = joint and n_shared > 0
    labels, emb = {}, {}
    for name, mod, k in (("rna", rna, k_r), ("atac", atac, k_a)):
        if name == "atac":  # TF-IDF (LSI)
            rs, cs = tfidf_scales(mod.row_sums, mod.col_sums)
        else:
            rs, cs = np.ones(mod.n), np.ones(mod.p)
        rank = max(2, min(max(30, 2 * K), mod.n - 1, mod.p - 1))
        emb[name] = implicit_svd(mod.X, mod.Xt, rs, cs, rank, rng)
        if name == "rna":  # log-normalised counts keep a component along the cells' depth (see DEPTH_MAX_CORR)
            emb[name] = drop_depth_components(emb[name], np.diff(mod.X[0]))
        emb[name] /= np.maximum(np.linalg.norm(emb[name], axis=1, keepdims=True), 1e-12)
        if name == "rna" or not joint or n_rna_only > 0:  # the joint start needs ATAC's own clusters only to
            labels[name] = kmeans(emb[name], k, rng,       # tell the RNA-only clusters from the shared ones
                                  n_init=RNA_KMEANS_N_INIT if name == "rna" else 10)
    prof_rna = _cluster_profiles(rna, labels["rna"], k_r)  # genes × k_r

    def pair_by_profiles():  # the spectral pairing of ATAC's own clusters with the RNA clusters
        prof = _cluster_profiles(atac, labels["atac"], k_a)  # regions × k_a
        return (prof,) + match_clusters(_centered_corr(prof_rna, _product(problem.A, prof)), n_shared)

    if "atac" in labels:
        prof_atac, rna_cols, atac_cols = pair_by_profiles()
    else:  # every RNA cluster is shared
        rna_cols = np.arange(k_r, dtype=np.int64)
    if joint:
        atac_labels = joint_atac_labels(problem, emb["atac"], rna_cols[labels["rna"]], n_shared, n_rna_only,
                                        n_atac_only, rng)
        if atac_labels is not None:
            atac_cols = np.r_[np.arange(n_shared), n_shared + n_rna_only + np.arange(n_atac_only)].astype(np.int64)
            labels["atac"] = atac_labels
            prof_atac = _cluster_profiles(atac, atac_labels, k_a)
        elif "atac" not in labels:  # no gene varies in both modalities: the spectral start's own ATAC clusters
            labels["atac"] = kmeans(emb["atac"], k_a, rng)
            prof_atac, rna_cols, atac_cols = pair_by_profiles()
    for name, mod, cols, prof in (("rna", rna, rna_cols, prof_rna), ("atac", atac, atac_cols, prof_atac)):
        f = params[name]
        f.Z[np.arange(mod.n), cols[labels[name]]] = scale
        f.Zf[:] = _feature_logits(prof, cols, K, scale)


# --------------------------------------------------------------------------- joint start for the ATAC cells


#: defaults of the joint start, chosen on the package's simulator and the shared datasets (docs/model.md)
JOINT_RANK = 30
JOINT_NEIGHBORS = 30
#: the prior weight λ of the ATAC start is ``JOINT_PRIOR_WEIGHT × (1 − stability)``, the stability being the mean
#: ARI between :data:`JOINT_STABILITY_RUNS` single-start k-means of the ATAC cells' own LSI (:func:`own_stability`):
#: the RNA votes count for less where the ATAC cells' own clusters reproduce (docs/quality.md)
JOINT_PRIOR_WEIGHT = 0.2
JOINT_STABILITY_RUNS = 4
#: k-means starts of the RNA start (lowest inertia kept)
RNA_KMEANS_N_INIT = 20
JOINT_PSEUDOCOUNT = 1.0


def joint_atac_labels(problem, emb_atac, rna_cols, n_shared, n_rna_only, n_atac_only, rng):
    """ATAC cells' starting clusters, informed by the RNA cells (``init="joint"``).

    1. ATAC gene scores ``R Aᵀ`` (:func:`gene_scores`) and a CCA against the RNA
       (:func:`cca_embeddings`) put the cells of both modalities in one space;
    2. each ATAC cell counts the columns of its ``JOINT_NEIGHBORS`` nearest RNA
       cells there (RNA-only columns get no votes);
    3. a k-means in the ATAC cells' own LSI space (``emb_atac``), started from
       the votes' argmax, with the cost ``|x − μ_k|² − λ log v_k``: ``v_k`` the
       share of votes for shared column ``k`` (a pseudo-count of
       ``JOINT_PSEUDOCOUNT`` per column), ``λ = JOINT_PRIOR_WEIGHT × (1 − s)``
       with ``s`` the reproducibility of the ATAC cells' own k-means
       (:func:`own_stability`): the votes matter less where ATAC clusters alone. ATAC-only
       clusters start from the least confident cells and have a flat prior
       (the share of an uninformative vote, ``1 / n_shared``).

    Returns the ATAC cells' cluster index in ``0 … n_shared + n_atac_only − 1``
    (shared clusters first), or None when no gene varies in both modalities.
    """
    import numba

    emb_r, emb_a = cca_embeddings(problem.rna.X, GeneScores(problem), problem.n_genes, JOINT_RANK, rng)
    if emb_r is None:
        return None
    votes = neighbor_votes(emb_a, emb_r, rna_cols, problem.K, min(JOINT_NEIGHBORS, emb_r.shape[0]),
                           numba.get_num_threads())[:, :n_shared]
    share = (votes + JOINT_PSEUDOCOUNT) / (votes.sum(axis=1, keepdims=True) + JOINT_PSEUDOCOUNT * n_shared)
    k_a = n_shared + n_atac_only
    log_prior = np.full((emb_a.shape[0], k_a), np.log(1.0 / n_shared))
    log_prior[:, :n_shared] = np.log(share)
    init = share.argmax(axis=1)
    if n_atac_only:  # ATAC-only clusters: k-means on the cells the RNA votes say least about
        conf = share.max(axis=1)
        n_low = max(n_atac_only, int(round(emb_atac.shape[0] * n_atac_only / k_a)))
        low = np.argsort(conf, kind="stable")[:n_low]
        init[low] = n_shared + kmeans(emb_atac[low], n_atac_only, rng)
    lam = JOINT_PRIOR_WEIGHT * (1.0 - own_stability(emb_atac, k_a, rng))
    return prior_kmeans(emb_atac, log_prior, init, lam)


def own_stability(X, k, rng, n_runs=JOINT_STABILITY_RUNS):
    """Mean pairwise ARI of ``n_runs`` single-start k-means of ``X`` (``k`` clusters): how well its clusters reproduce.

    About 1 where the ATAC cells form clear clusters of their own (the package's simulator: 0.99 at separation 0.4),
    about 0.1 where they do not (80 % of the open regions moved at random: 0.09–0.15); SNARE-seq cortex 0.41–0.46.
    """
    from .metrics import adjusted_rand_index
    labs = [kmeans(X, k, rng, n_init=1) for _ in range(n_runs)]
    return float(np.mean([adjusted_rand_index(labs[i], labs[j]) for i in range(n_runs) for j in range(i + 1, n_runs)]))


#: above this many nonzeros, :func:`_csr_col_stats` squares the values a block of rows at a time instead of
#: copying all of them (the RNA of the 100,000-cell atlas: 0.9 GB)
COL_STATS_BLOCK_NNZ = 2**26


def _csr_col_stats(csr, p):
    """Mean and standard deviation of each column of the CSR arrays of ``X`` (n × p), float64."""
    n = csr[0].shape[0] - 1
    ones = np.ones((n, 1))
    s1 = _product_t(csr, None, p, ones)[:, 0]
    if csr[2].shape[0] <= COL_STATS_BLOCK_NNZ:
        s2 = _product_t((csr[0], csr[1], np.square(csr[2])), None, p, ones)[:, 0]
    else:  # float64 column sums of squares, one block of rows at a time: no copy of all the values
        indptr, indices, data = csr
        s2 = np.zeros(p)
        start = 0
        while start < n:
            stop = int(np.searchsorted(indptr, indptr[start] + COL_STATS_BLOCK_NNZ, side="right")) - 1
            stop = min(n, max(stop, start + 1))
            a, b = int(indptr[start]), int(indptr[stop])
            s2 += np.bincount(indices[a:b], weights=np.square(data[a:b], dtype=np.float64), minlength=p)
            start = stop
    mean = s1 / max(n, 1)
    var = np.maximum(s2 / max(n, 1) - mean * mean, 0.0)
    return mean, np.sqrt(var)


class _Standardized:
    """``Z = (X − 1 μᵀ) diag(w)`` of a CSR matrix ``X`` (n × p), applied to thin blocks without forming it.

    ``mean`` and ``sd`` are ``X``'s column means and standard deviations
    (:func:`_csr_col_stats`); ``w`` is ``1/σ`` on the columns kept and 0 elsewhere, so ``Z``'s columns are
    z-scores (Seurat's ``ScaleData`` without the clipping) or zero.
    """

    def __init__(self, csr, p, keep, mean, sd):
        self.csr, self.p = csr, p
        self.w = np.zeros(p)
        self.w[keep] = 1.0 / sd[keep]
        self.mean = mean
        self.mean_w = mean * self.w

    def dot(self, B, rows=None):
        """``Z[rows] B`` for ``B`` of shape (p, l)."""
        return _scaled_product(self.csr, np.ones(self.csr[0].shape[0] - 1), self.w, self.mean_w[None, :], B, rows)

    def tdot(self, B, rows=None):
        """``Z[rows]ᵀ B`` for ``B`` of shape (len(rows), l)."""
        out = _product_t(self.csr, None, self.p, B, rows)
        out -= np.outer(self.mean, B.sum(axis=0))
        out *= self.w[:, None]
        return out


class GeneScores:
    """ATAC gene scores ``R Aᵀ`` (ATAC cells × genes), log-normalised, made for any rows on demand.

    Each cell's scores are scaled to the median library size and ``log1p``-ed,
    as the RNA is (Signac's ``GeneActivity`` followed by ``NormalizeData``).
    The matrix has about as many nonzeros as the ATAC data (each region links
    to about one gene), so above ``max_fit_rows`` cells it is never held whole:
    :func:`cca_embeddings` asks for the rows of its subset and for blocks of
    :data:`GENE_SCORE_BLOCK_NNZ` ATAC nonzeros at a time (measured on the
    100,000-cell atlas: holding it whole raised the fit's peak memory from 1.6
    to 2.1 times the input).
    """

    def __init__(self, problem: Problem):
        import scipy.sparse as sp  # imported here: keeps `import fastjmt` cheap

        atac = problem.atac
        self.R = sp.csr_matrix((atac.X[2], atac.X[1], atac.X[0]), shape=(atac.n, atac.p))
        self.A = sp.csr_matrix((problem.A[2], problem.A[1], problem.A[0]), shape=(problem.n_genes, problem.n_regions))
        self.n, self.p = atac.n, problem.n_genes
        self.itype, self.dtype = atac.X[0].dtype, atac.X[2].dtype
        self.target = None  # the median library size over all cells, once known

    def _raw(self, rows):
        GS = (self.R[rows] @ self.A.T).tocsr()
        GS.sort_indices()
        return GS.astype(np.float64)

    def rows(self, rows=slice(None)):
        """CSR arrays of the log-normalised scores of ``rows`` (a slice or sorted indices), in the data's dtype.

        Once the target is known (:meth:`set_target`), made ``GENE_SCORE_ROWS`` rows at a time, so that no
        float64 copy of all of them exists.
        """
        if self.target is None or isinstance(rows, slice):
            return self._block(rows)
        parts = [self._block(rows[a:a + GENE_SCORE_ROWS]) for a in range(0, len(rows), GENE_SCORE_ROWS)]
        counts = np.concatenate([np.diff(pt[0]) for pt in parts]).astype(np.int64)
        wide = counts.sum() > np.iinfo(np.int32).max
        indptr = np.zeros(len(rows) + 1, dtype=np.int64 if wide else self.itype)
        np.cumsum(counts, out=indptr[1:])
        indices = np.concatenate([pt[1] for pt in parts]).astype(indptr.dtype, copy=False)
        return (indptr, indices, np.concatenate([pt[2] for pt in parts]))

    def _block(self, rows):
        from .preprocess import normalize_log1p

        GS = normalize_log1p(self._raw(rows), target_sum=self.target, copy=False)
        return (GS.indptr.astype(self.itype), GS.indices.astype(self.itype), GS.data.astype(self.dtype))

    def blocks(self):
        """Row slices of about ``GENE_SCORE_BLOCK_NNZ`` ATAC nonzeros each, in order."""
        indptr = self.R.indptr
        start = 0
        while start < self.n:
            stop = int(np.searchsorted(indptr, indptr[start] + GENE_SCORE_BLOCK_NNZ, side="right")) - 1
            stop = min(self.n, max(stop, start + 1))
            yield slice(start, stop)
            start = stop

    def set_target(self):
        """The median nonzero library size of the scores of all cells (computed a block at a time)."""
        lib = np.concatenate([np.asarray(self._raw(b).sum(axis=1)).ravel() for b in self.blocks()])
        nz = lib[lib > 0]
        self.target = float(np.median(nz)) if nz.size else 1.0

    def col_stats(self):
        """Column means and standard deviations of the scores of all cells (float64), a block at a time."""
        s1, s2 = np.zeros(self.p), np.zeros(self.p)
        for b in self.blocks():
            _, idx, data = self.rows(b)
            d = data.astype(np.float64)
            s1 += np.bincount(idx, weights=d, minlength=self.p)
            s2 += np.bincount(idx, weights=d * d, minlength=self.p)
        mean = s1 / max(self.n, 1)
        return mean, np.sqrt(np.maximum(s2 / max(self.n, 1) - mean * mean, 0.0))


#: ATAC nonzeros per block of gene scores made at once (about 150 MB of scores in float32)
GENE_SCORE_BLOCK_NNZ = 10_000_000
#: rows of gene scores made at once for the CCA's subset
GENE_SCORE_ROWS = 2000


def gene_scores(problem: Problem):
    """ATAC gene scores of all cells as CSR arrays in the data's dtype (see :class:`GeneScores`)."""
    return GeneScores(problem).rows()


def cca_embeddings(rna_csr, gs, n_genes, rank, rng, n_power_iter=None, max_fit_rows=20_000):
    """Canonical correlation embeddings of RNA cells and ATAC cells on the genes they share.

    Seurat's CCA (Stuart et al., Cell 2019): with ``Zr`` the z-scored RNA and
    ``Za`` the z-scored ATAC gene scores (genes that vary in both), the top
    ``rank`` singular vectors of ``Zr Zaᵀ`` (RNA cells × ATAC cells) embed both
    modalities in one space. A randomised SVD (as :func:`implicit_svd`) that
    only applies ``Zr`` and ``Za`` to thin blocks: the cells × cells matrix is
    never formed. Above ``max_fit_rows`` cells per modality the SVD sees a
    random subset of each, and every cell is projected through the gene
    loadings (``Zr Zaₛᵀ V Σ⁻¹`` and ``Za Zrₛᵀ U Σ⁻¹``; equal to ``U`` and ``V``
    without subsets).

    ``gs``: the ATAC side, CSR arrays or a :class:`GeneScores` (then, above
    ``max_fit_rows`` ATAC cells, the scores are made for the subset and in
    blocks, never whole).

    Returns
    -------
    emb_rna, emb_atac : ndarray, shapes (n_rna, r) and (n_atac, r), float64
        Rows L2-normalised; ``r ≤ rank``. ``None, None`` when fewer than two
        genes vary in both modalities.
    """
    n_power_iter = SVD_POWER_ITER if n_power_iter is None else n_power_iter
    blocked = isinstance(gs, GeneScores) and gs.n > max_fit_rows
    if isinstance(gs, GeneScores) and not blocked:
        gs = gs.rows()
    mean_r, sd_r = _csr_col_stats(rna_csr, n_genes)
    if blocked:
        gs.set_target()
        mean_a, sd_a = gs.col_stats()
    else:
        mean_a, sd_a = _csr_col_stats(gs, n_genes)
    keep = np.flatnonzero((sd_r > 0) & (sd_a > 0))
    if keep.size < 2:
        return None, None
    n_r, n_a = rna_csr[0].shape[0] - 1, (gs.n if blocked else gs[0].shape[0] - 1)
    rows_r = np.sort(rng.choice(n_r, max_fit_rows, replace=False)).astype(np.int64) if n_r > max_fit_rows else None
    rows_a = np.sort(rng.choice(n_a, max_fit_rows, replace=False)).astype(np.int64) if n_a > max_fit_rows else None
    Zr = _Standardized(rna_csr, n_genes, keep, mean_r, sd_r)
    if blocked:  # the subset's scores only; the rows' indices are then those of the subset
        Za = _Standardized(gs.rows(rows_a), n_genes, keep, mean_a, sd_a)
        fit_rows_a = None
    else:
        Za = _Standardized(gs, n_genes, keep, mean_a, sd_a)
        fit_rows_a = rows_a
    m_r = n_r if rows_r is None else rows_r.shape[0]
    m_a = n_a if rows_a is None else rows_a.shape[0]

    def M(B):  # (Zr_s Za_sᵀ) B, B: m_a × l
        return Zr.dot(Za.tdot(B, fit_rows_a), rows_r)

    def MT(B):  # (Za_s Zr_sᵀ) B, B: m_r × l
        return Za.dot(Zr.tdot(B, rows_r), fit_rows_a)

    ell = min(rank + 10, m_r, m_a, keep.size)
    Q, _ = np.linalg.qr(M(rng.standard_normal((m_a, ell))))
    for _ in range(n_power_iter):
        Q, _ = np.linalg.qr(MT(Q))
        Q, _ = np.linalg.qr(M(Q))
    Bt = MT(Q)  # m_a × ell = (Qᵀ M)ᵀ
    Ub, s, Vt = np.linalg.svd(Bt.T, full_matrices=False)
    k = int(min(rank, np.sum(s > s[0] * 1e-10)))
    U, V, s = Q @ Ub[:, :k], Vt[:k].T, s[:k]
    W_r = Za.tdot(V, fit_rows_a) / s  # genes × k: RNA loadings
    W_a = Zr.tdot(U, rows_r) / s
    emb = []
    for Z, W in ((Zr, W_r), (Za, W_a)):
        if blocked and Z is Za:  # every ATAC cell, a block of scores at a time
            E = np.concatenate([_Standardized(gs.rows(b), n_genes, keep, mean_a, sd_a).dot(W) for b in gs.blocks()])
        else:
            E = Z.dot(W)
        E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        emb.append(E)
    return emb[0], emb[1]


def neighbor_votes(emb_atac, emb_rna, rna_cols, K, n_neighbors, n_threads):
    """For each ATAC cell, the columns of its ``n_neighbors`` nearest RNA cells: an (n_atac, K) count array."""
    from .postprocess import cross_neighbors

    _, idx, _ = cross_neighbors(emb_atac, emb_rna, n_neighbors, n_threads, both=False)
    n = emb_atac.shape[0]
    ok = idx >= 0
    rows = np.repeat(np.arange(n), idx.shape[1])[ok.ravel()]
    return np.bincount(rows * K + rna_cols[idx[ok]], minlength=n * K).reshape(n, K).astype(np.float64)


def prior_kmeans(X, log_prior, init_labels, lam, max_iter=100):
    """k-means whose cost adds a per-cell prior: cell ``i`` goes to ``argmin_k |x_i − μ_k|² − lam · log_prior[i, k]``.

    Started from the centres of ``init_labels``; a cluster that empties keeps
    its last centre. Returns the labels (int64).
    """
    k = log_prior.shape[1]
    labels = init_labels.astype(np.int64).copy()
    centers = np.zeros((k, X.shape[1]))
    x_sq = (X * X).sum(axis=1)[:, None]
    for it in range(max_iter):
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(labels, weights=X[:, j], minlength=k) for j in range(X.shape[1])], axis=1)
        full = counts > 0
        centers[full] = sums[full] / counts[full, None]
        cost = x_sq - 2.0 * X @ centers.T + (centers * centers).sum(axis=1)[None, :]
        cost -= lam * log_prior
        new = cost.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


# --------------------------------------------------------------------------- the start of a mosaic


#: pseudo-count of the paired cells' per-column ATAC profiles (:func:`paired_profile_labels`)
PAIRED_PSEUDOCOUNT = 1.0


def paired_profile_labels(R_paired, columns_paired, R_cells, allowed, K):
    """Columns for ATAC cells from the paired cells' ATAC profiles per column (a multinomial naive Bayes).

    ``θ_k = (Σ_{paired i in k} r_i + α) / (Σ + α p)`` over the regions (α = ``PAIRED_PSEUDOCOUNT``), the
    prior ``log(n_k + 1)``, and each cell goes to ``argmax_k r · log θ_k + prior_k`` over its ``allowed``
    columns (a bool mask of K): one sparse × thin product. Returns int64 columns.
    """
    Y = _onehot(columns_paired, K)  # K × n_paired
    counts = np.asarray((Y @ R_paired).todense(), dtype=np.float64) + PAIRED_PSEUDOCOUNT
    log_theta = np.log(counts / counts.sum(axis=1, keepdims=True))
    prior = np.log(np.bincount(columns_paired, minlength=K)[:K] + 1.0)
    ll = _product((R_cells.indptr, R_cells.indices, R_cells.data), log_theta.T) + prior[None, :]
    ll[:, ~allowed] = -np.inf
    return ll.argmax(axis=1).astype(np.int64)


def _onehot(labels, K):
    import scipy.sparse as sp

    n = labels.size
    return sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(K, n))


def _move(Z, rows, cols, scale):
    """The start's logits of the cells ``rows`` (a mask) become ``scale`` × one-hot of their new ``cols``."""
    Z[rows] = 0
    Z[np.flatnonzero(rows), cols] = scale


def initialize_mosaic(mosaic, matrices: dict, A, n_shared: int, private: dict, method: str,
                      rng: np.random.Generator, init_scale: float, weights: dict, low_memory: bool = False):
    """Starting factors of a mosaic (:class:`fastjmt.problem.MosaicParams`), from the two-matrix start.

    1. The two-matrix start (:func:`initialize`) on every cell with RNA (all batches with an RNA block,
       stacked) against the cells of the ATAC-only batches (or, without any, the paired batches' ATAC),
       with the RNA batches' private columns as its RNA-only columns and the ATAC-only batches' as its
       ATAC-only ones.
    2. Start columns go to the mosaic's layout (shared first, then each batch's private columns in the
       order of ``private``): a private start column goes to the batch holding most of its cells
       (an optimal assignment); a cell whose column its batch may not use moves to its highest program
       activity among the allowed columns.
    3. With paired batches, ATAC-only cells outside their own private columns take the column their ATAC
       profile is most likely under the paired cells' per-column ATAC profiles
       (:func:`paired_profile_labels`): what the pairing tells about ATAC, measured in docs/mosaic.md.
    4. Each batch's memberships are its rows; each block's S and biases the least squares given them
       (:func:`fastjmt.objective.fit_association`), the feature biases then shared
       (:func:`fastjmt.objective.feature_bias`).

    The mosaic of one RNA and one ATAC batch starts exactly as the two-matrix fit.
    """
    import scipy.sparse as sp
    from scipy.optimize import linear_sum_assignment

    from . import objective as obj
    from .problem import BlockFactors, Cells, Features, MosaicParams, build_problem

    K, dt = mosaic.K, mosaic.dtype
    rna_blocks = mosaic.blocks_of_modality("rna")
    atac_blocks = mosaic.blocks_of_modality("atac")
    paired = [b for b in atac_blocks if len(mosaic.blocks_of_batch(b.batch)) > 1]
    atac_side = [b for b in atac_blocks if len(mosaic.blocks_of_batch(b.batch)) == 1] or paired
    rna_priv = [k for k in private if any(b.batch == k for b in rna_blocks)]
    atac_priv = [k for k in private if k in {b.batch for b in atac_side} and k not in rna_priv]
    n_r, n_a = sum(private[k] for k in rna_priv), sum(private[k] for k in atac_priv)

    def stacked(blocks):
        return sp.vstack([matrices[b.name] for b in blocks], format="csr") if len(blocks) > 1 \
            else matrices[blocks[0].name]

    problem = build_problem(stacked(rna_blocks), stacked(atac_side), A, n_shared, n_r, n_a, weights, dt, low_memory)
    start = initialize(problem, n_shared, n_r, n_a, method, rng, init_scale)

    # start columns -> the mosaic's columns
    offset, col = {}, n_shared
    for k in private:
        offset[k] = col
        col += private[k]
    rows_of = {}  # batch -> (start side, first row)
    for side, blocks in (("rna", rna_blocks), ("atac", atac_side)):
        at = 0
        for b in blocks:
            rows_of.setdefault(b.batch, (side, at))
            at += b.data.n
    perm = np.arange(K)
    for side, owners, first in (("rna", rna_priv, n_shared), ("atac", atac_priv, n_shared + n_r)):
        slots = [(k, offset[k] + j) for k in owners for j in range(private[k])]
        if len(owners) == 1:
            perm[first:first + len(slots)] = [c for _, c in slots]
        elif owners:  # each private start column to the batch holding most of its cells
            labels = start[side].Z.argmax(axis=1)
            counts = np.zeros((len(slots), len(slots)))
            for s_idx, (k, _) in enumerate(slots):
                r0 = rows_of[k][1]
                counts[:, s_idx] = np.bincount(labels[r0:r0 + mosaic.batches[k][0]], minlength=K)[
                    first:first + len(slots)]
            row_ind, col_ind = linear_sum_assignment(-counts)
            perm[first + row_ind] = [slots[c][1] for c in col_ind]

    def permuted(M):
        out = np.empty_like(M)
        out[:, perm] = M
        return out

    features = {m: Features(permuted(start[m].Zf), softmax(permuted(start[m].Zf)), start[m].c.copy())
                for m in MODALITIES}
    cells = {}
    for k, (n_k, masked) in mosaic.batches.items():
        side, r0 = rows_of[k]
        Z = permuted(start[side].Z[r0:r0 + n_k])
        bad = np.isin(Z.argmax(axis=1), masked)
        if bad.any():  # moved to the allowed column of highest program activity
            blk = next(b for b in mosaic.blocks_of_batch(k) if b.modality == side)
            P = obj.program_activity(blk.data, features[side].Cf).astype(np.float64)
            P[:, masked] = -np.inf
            _move(Z, bad, P[bad].argmax(axis=1), init_scale)
        cells[k] = Z
    if paired and atac_side is not paired and method != "random":
        R_paired = stacked(paired)
        cols_paired = np.concatenate([cells[b.batch].argmax(axis=1) for b in paired])
        for b in atac_side:
            masked = mosaic.batches[b.batch][1]
            own = np.arange(K) >= n_shared
            own[masked] = False  # the batch's own private columns
            Z = cells[b.batch]
            move = ~own[Z.argmax(axis=1)]
            allowed = ~own
            allowed[masked] = False
            new = paired_profile_labels(R_paired, cols_paired, matrices[b.name], allowed, K)
            _move(Z, move, new[move], init_scale)
    cells = {k: Cells(Z, softmax(Z)) for k, Z in cells.items()}

    simple = len(rna_blocks) == 1 and len(atac_blocks) == 1 and not paired and np.array_equal(perm, np.arange(K))
    if simple:  # the two-matrix start itself
        return MosaicParams({b.batch: Cells(start[b.modality].Z, start[b.modality].C) for b in mosaic.blocks},
                            {m: Features(start[m].Zf, start[m].Cf, start[m].c) for m in MODALITIES},
                            {b.name: BlockFactors(start[b.modality].S, start[b.modality].b) for b in mosaic.blocks})
    blocks = {}
    for b in mosaic.blocks:
        feat, c = features[b.modality], cells[b.batch]
        f = Factors(c.Z, c.C, feat.Zf, feat.Cf, np.zeros((K, K), dt), np.zeros(b.data.n, dt), feat.c.copy())
        fit_association(b.data, f)
        blocks[b.name] = BlockFactors(f.S, f.b)
    mp = MosaicParams(cells, features, blocks)
    for m in MODALITIES:  # the feature biases shared by the blocks, then each block's cell biases
        obj.refit_features_first(mosaic, mp, m)
    return mp

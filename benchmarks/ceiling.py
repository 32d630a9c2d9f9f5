"""The supervised ceiling of a dataset: how well cells can be told apart at all, given their true labels.

Usage::

    python benchmarks/ceiling.py ../shared/data/sim_symsim_5clust_hard [more folders] [--markdown FILE]

An unsupervised method cannot put a cell in the right cluster more often than
a classifier that has *seen the labels* can. For each modality this script
trains classifiers on the true labels of 80 % of the cells and predicts the
other 20 % (5-fold cross-validation, every cell predicted once), and reports
the ARI of those predictions per modality and pooled (both modalities'
predictions in one labelling, as the integration ARI is computed):

- ``lda``: class means and a shared covariance (linear discriminant analysis) on
  the first 10, 30 or 50 components of the representation the spectral start
  uses (log-normalised RNA; TF-IDF ATAC, also with the first LSI component
  dropped, ``-lsi1``, as it often follows sequencing depth);
- ``knn``: majority of the 15 nearest training cells (cosine) in the first 30 of those components;
- ``naive_bayes``: multinomial (RNA counts) or Bernoulli (ATAC open / closed)
  class likelihoods with class priors, on all features.

and two cross-modal ceilings. ``transfer``: every ATAC cell gets the true RNA
type whose mean expression correlates best with the cell's gene-activity
profile (ATAC × Aᵀ), i.e. what matching ATAC cells to RNA *type centroids*
through the gene activity matrix gives when the RNA side is known perfectly, and the pooled ARI
of those ATAC labels together with the true RNA labels; then a Bernoulli
mixture over the ATAC cells' open regions, fitted by EM from those labels
(does the ATAC data itself sharpen a perfect transfer?). ``transfer_cca``: every
ATAC cell gets the majority true type of its 30 nearest RNA cells in the CCA of
the joint start (:func:`fastjmt.initialize.cca_embeddings`): matching single
cells, not centroids, through the same gene activity matrix.

The ``best`` rows take the best classifier per modality. They are estimates
from below of the Bayes limit (a better classifier may exist), but a quality
target above them asks an unsupervised method to beat classifiers trained on
the answer. Nothing here is part of the package; it reads the shared-format
folders only (``rna.npz``, ``atac.npz``, ``gene_activity.npz``, ``*_labels.txt``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, svds

from fastjmt.metrics import adjusted_rand_index
from fastjmt.preprocess import normalize_log1p

from evaluate import load_folder

N_FOLDS = 5


def load(folder):
    """The shared-format folder in float64 CSR (:func:`evaluate.load_folder`), labels as a list."""
    rna, atac, ga, ry, ay = load_folder(folder)
    return (sp.csr_matrix(rna, dtype=np.float64), sp.csr_matrix(atac, dtype=np.float64),
            sp.csr_matrix(ga, dtype=np.float64), [ry, ay])


def log_normalised(X):
    """Library size 10^4, then log1p (:func:`fastjmt.preprocess.normalize_log1p`)."""
    return normalize_log1p(sp.csr_matrix(X, dtype=np.float64), target_sum=1e4)


def tf_idf(X):
    B = sp.csr_matrix(X, copy=True)
    B.data[:] = 1.0
    idf = np.log1p(B.shape[0] / (1.0 + np.asarray(B.sum(axis=0)).ravel()))
    depth = np.asarray(B.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(depth, 1.0)) @ B @ sp.diags(idf))


def components(M, r, seed=0):
    """Top ``r`` principal components (scores) of sparse ``M``, centred implicitly (no dense copy)."""
    mu = np.asarray(M.mean(axis=0)).ravel()
    n, p = M.shape
    op = LinearOperator((n, p), dtype=np.float64,
                        matvec=lambda v: M @ v - mu @ v, rmatvec=lambda u: M.T @ u - mu * u.sum(),
                        matmat=lambda V: M @ V - np.outer(np.ones(n), mu @ V),
                        rmatmat=lambda U: M.T @ U - np.outer(mu, U.sum(axis=0)))
    k = min(r, min(n, p) - 1)
    U, s, _ = svds(op, k=k, random_state=seed)
    order = np.argsort(-s)
    return U[:, order] * s[order]


def folds(n, rng):
    return rng.permutation(n) % N_FOLDS


def lda(E, y, fold):
    pred = np.empty_like(y)
    for f in range(N_FOLDS):
        tr, te = fold != f, fold == f
        classes = np.unique(y[tr])
        mu = np.stack([E[tr][y[tr] == c].mean(axis=0) for c in classes])
        R = E[tr] - mu[np.searchsorted(classes, y[tr])]
        P = np.linalg.inv(R.T @ R / tr.sum() + 1e-6 * np.eye(E.shape[1]))
        log_prior = np.log(np.array([(y[tr] == c).mean() for c in classes]))
        score = np.stack([-0.5 * np.einsum("nk,kl,nl->n", E[te] - m, P, E[te] - m) for m in mu], axis=1) + log_prior
        pred[te] = classes[score.argmax(axis=1)]
    return pred


def knn(E, y, fold, k=15):
    En = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    n_cls = y.max() + 1
    pred = np.empty_like(y)
    for f in range(N_FOLDS):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        for start in range(0, te.size, 2048):
            q = te[start:start + 2048]
            sim = En[q] @ En[tr].T
            nb = np.argpartition(-sim, k, axis=1)[:, :k]
            votes = y[tr][nb]
            pred[q] = np.array([np.bincount(v, minlength=n_cls).argmax() for v in votes])
    return pred


def naive_bayes(X, y, fold, binary):
    pred = np.empty_like(y)
    D = sp.csr_matrix(X, copy=True)
    if binary:
        D.data[:] = 1.0
    for f in range(N_FOLDS):
        tr, te = fold != f, fold == f
        classes = np.unique(y[tr])
        H = sp.csr_matrix((np.ones(tr.sum()), (np.searchsorted(classes, y[tr]), np.arange(tr.sum()))),
                          shape=(classes.size, tr.sum()))
        sums = np.asarray((H @ D[tr]).todense())
        counts = np.asarray(H.sum(axis=1)).ravel()
        if binary:
            q = np.clip(sums / counts[:, None], 1e-3, 1 - 1e-3)
            ll = D[te] @ (np.log(q) - np.log1p(-q)).T + np.log1p(-q).sum(axis=1)
        else:
            logp = np.log((sums + 0.5) / (sums + 0.5).sum(axis=1, keepdims=True))
            ll = D[te] @ logp.T
        ll = np.asarray(ll) + np.log(counts / counts.sum())
        pred[te] = classes[ll.argmax(axis=1)]
    return pred


def transfer(rna, atac, ga, y_rna, classes):
    """ATAC cells labelled by the true RNA type whose mean expression best correlates with their gene activity."""
    B = sp.csr_matrix(atac, copy=True)
    B.data[:] = 1.0
    Lr, La = log_normalised(rna), log_normalised(sp.csr_matrix(B @ ga.T))

    def standardise(L):
        mu = np.asarray(L.mean(axis=0)).ravel()
        sd = np.sqrt(np.maximum(np.asarray(L.multiply(L).mean(axis=0)).ravel() - mu ** 2, 0.0)) + 1e-6
        return mu, sd

    mr, sr = standardise(Lr)
    ma, sa = standardise(La)
    present = np.unique(y_rna)
    H = sp.csr_matrix((np.ones(y_rna.size), (np.searchsorted(present, y_rna), np.arange(y_rna.size))))
    centroids = (np.asarray((H @ Lr).todense()) / np.asarray(H.sum(axis=1)) - mr) / sr  # types × genes, z-scored
    centroids -= centroids.mean(axis=1, keepdims=True)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    pred = np.empty(La.shape[0], dtype=np.int64)
    for start in range(0, La.shape[0], 2048):
        Z = (La[start:start + 2048].toarray() - ma) / sa
        Z -= Z.mean(axis=1, keepdims=True)
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        pred[start:start + 2048] = present[(Z @ centroids.T).argmax(axis=1)]
    return pred


def transfer_cca(rna, atac, ga, y_rna, n_classes, n_neighbors=30):
    """ATAC cells labelled by the vote of their nearest RNA cells (true types) in the joint start's CCA space.

    The same gene scores, CCA and neighbour votes as ``fit(init="joint")``
    (:mod:`fastjmt.initialize`), with the true RNA types in place of the RNA
    clusters: the best the joint start's cross-modal step can do.
    """
    from fastjmt import preprocess as pp
    from fastjmt.api import DEFAULT_WEIGHTS
    from fastjmt.problem import build_problem
    from fastjmt.initialize import JOINT_RANK, cca_embeddings, gene_scores, neighbor_votes

    G = pp.preprocess_rna(pp.to_csr(rna))
    R = pp.preprocess_atac(pp.to_csr(atac))
    A = pp.preprocess_gene_activity(pp.to_csr(ga))
    problem = build_problem(G, R, A, n_classes, 0, 0, DEFAULT_WEIGHTS, np.float64)
    er, ea = cca_embeddings(problem.rna.X, gene_scores(problem), problem.n_genes, JOINT_RANK,
                            np.random.default_rng(0))
    return neighbor_votes(ea, er, y_rna, n_classes, n_neighbors, 1).argmax(axis=1)


def bernoulli_em(atac, labels, n_classes, n_iter=30):
    """Labels of a Bernoulli mixture over open / closed regions, EM (soft) started from ``labels``."""
    B = sp.csr_matrix(atac, copy=True)
    B.data[:] = 1.0
    R = np.eye(n_classes)[labels]
    for _ in range(n_iter):
        Nk = R.sum(axis=0) + 1e-9
        q = np.clip(np.asarray(B.T @ R).T / Nk[:, None], 1e-4, 1 - 1e-4)
        ll = np.asarray(B @ (np.log(q) - np.log1p(-q)).T) + np.log1p(-q).sum(axis=1) + np.log(Nk / Nk.sum())
        ll -= ll.max(axis=1, keepdims=True)
        R = np.exp(ll)
        R /= R.sum(axis=1, keepdims=True)
    return R.argmax(axis=1)


def ceiling(folder, seed=0):
    rna, atac, ga, labels = load(folder)
    classes = np.unique(np.concatenate(labels))
    ys = [np.searchsorted(classes, y) for y in labels]
    rng = np.random.default_rng(seed)
    rows, preds = [], {}
    for name, X, y in (("rna", rna, ys[0]), ("atac", atac, ys[1])):
        fold = folds(y.size, rng)
        rep = log_normalised(X) if name == "rna" else tf_idf(X)
        E = components(rep, 51, seed)
        cands = {f"lda{r}": lda(E[:, :r], y, fold) for r in (10, 30, 50)}
        cands["knn30"] = knn(E[:, :30], y, fold)
        if name == "atac":  # also without the first LSI component, which often follows sequencing depth
            cands.update({f"lda{r}-lsi1": lda(E[:, 1:r + 1], y, fold) for r in (10, 30, 50)})
            cands["knn30-lsi1"] = knn(E[:, 1:31], y, fold)
        cands["naive_bayes"] = naive_bayes(X, y, fold, binary=name == "atac")
        for method, pred in cands.items():
            rows.append(dict(modality=name, method=method, ari=adjusted_rand_index(y, pred),
                             accuracy=float((pred == y).mean())))
        best = max(cands, key=lambda m: adjusted_rand_index(y, cands[m]))
        preds[name] = (best, cands[best])
    pooled = adjusted_rand_index(np.concatenate(ys), np.concatenate([preds["rna"][1], preds["atac"][1]]))
    tr = transfer(rna, atac, ga, ys[0], classes)
    tr_em = bernoulli_em(atac, tr, classes.size)
    tr_cca = transfer_cca(rna, atac, ga, ys[0], classes.size)
    summary = dict(dataset=os.path.basename(os.path.normpath(folder)),
                   best_rna=max(r["ari"] for r in rows if r["modality"] == "rna"),
                   best_atac=max(r["ari"] for r in rows if r["modality"] == "atac"),
                   pooled=pooled, methods=f"{preds['rna'][0]} / {preds['atac'][0]}",
                   transfer_atac=adjusted_rand_index(ys[1], tr),
                   transfer_accuracy=float((tr == ys[1]).mean()),
                   transfer_pooled=adjusted_rand_index(np.concatenate(ys), np.concatenate([ys[0], tr])),
                   transfer_em_atac=adjusted_rand_index(ys[1], tr_em),
                   transfer_cca_atac=adjusted_rand_index(ys[1], tr_cca),
                   transfer_cca_accuracy=float((tr_cca == ys[1]).mean()))
    return summary, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--markdown", help="also write the tables to this Markdown file")
    a = ap.parse_args(argv)
    out = [f"<!-- generated by: python benchmarks/ceiling.py {' '.join(a.folders)} -->", "",
           "| dataset | supervised ARI, RNA | supervised ARI, ATAC | pooled | best classifiers (RNA / ATAC) "
           "| ATAC through A, RNA labels known: ARI | accuracy | pooled with the true RNA labels "
           "| ATAC after Bernoulli EM from there | ATAC by 30-NN in the CCA, RNA labels known: ARI | accuracy |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    detail = ["", "| dataset | modality | classifier | ARI | accuracy |", "|---|---|---|---|---|"]
    for folder in a.folders:
        s, rows = ceiling(folder)
        out.append(f"| {s['dataset']} | {s['best_rna']:.3f} | {s['best_atac']:.3f} | {s['pooled']:.3f} | "
                   f"{s['methods']} | {s['transfer_atac']:.3f} | {s['transfer_accuracy']:.3f} | "
                   f"{s['transfer_pooled']:.3f} | "
                   f"{s['transfer_em_atac']:.3f} | {s['transfer_cca_atac']:.3f} | {s['transfer_cca_accuracy']:.3f} |")
        detail += [f"| {s['dataset']} | {r['modality']} | {r['method']} | {r['ari']:.3f} | {r['accuracy']:.3f} |"
                   for r in rows]
        print(out[-1], flush=True)
    text = "\n".join(out + detail) + "\n"
    print("\n".join(detail))
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    sys.exit(main())

import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(__file__))

from fastjmt import preprocess as pp  # noqa: E402
from fastjmt.problem import build_problem  # noqa: E402
from fastjmt.problem import Factors, softmax  # noqa: E402

WEIGHTS = {"a1": 10.0, "a2": 7.0, "a3": 2.0, "a4": 3.0, "a5": 5.0, "a6": 0.5}


def random_csr(rng, n, p, density, dtype=np.float64, index_dtype=np.int32):
    X = sp.random(n, p, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = rng.random(X.nnz) * 2
    X = pp.to_csr(X, dtype=dtype)
    X.indptr = X.indptr.astype(index_dtype)
    X.indices = X.indices.astype(index_dtype)
    return X


def random_case(seed=0, n_atac=13, n_rna=11, n_genes=7, n_regions=9, layout=(2, 1, 1), dtype=np.float64,
                index_dtype=np.int32, weights=None, density=0.3):
    """A random problem (no preprocessing) and random parameters, with the dense theta for the reference."""
    rng = np.random.default_rng(seed)
    w = dict(WEIGHTS if weights is None else weights)
    R = random_csr(rng, n_atac, n_regions, density, dtype, index_dtype)
    G = random_csr(rng, n_rna, n_genes, density, dtype, index_dtype)
    A = random_csr(rng, n_genes, n_regions, 0.3, dtype, index_dtype)
    ns, nr, na = layout
    K = ns + nr + na
    problem = build_problem(G, R, A, ns, nr, na, w, dtype)
    theta = {
        "Z_atac": rng.normal(size=(n_atac, K)), "Z_rna": rng.normal(size=(n_rna, K)),
        "Z_regions": rng.normal(size=(n_regions, K)), "Z_genes": rng.normal(size=(n_genes, K)),
        "S_atac": rng.normal(size=(K, K)), "S_rna": rng.normal(size=(K, K)),
        "b_atac": rng.normal(size=n_atac) * 0.1, "b_rna": rng.normal(size=n_rna) * 0.1,
        "c_atac": rng.normal(size=n_regions) * 0.1, "c_rna": rng.normal(size=n_genes) * 0.1,
    }
    rna_only = np.arange(ns, ns + nr)
    atac_only = np.arange(ns + nr, K)
    return dict(problem=problem, theta=theta, R=R, G=G, A=A, w=w, rna_only=rna_only, atac_only=atac_only,
                dtype=dtype)


def params_from_theta(theta, dtype=np.float64):
    out = {}
    for m, feat in (("atac", "regions"), ("rna", "genes")):
        Z = np.ascontiguousarray(theta["Z_" + m], dtype=dtype)
        Zf = np.ascontiguousarray(theta["Z_" + feat], dtype=dtype)
        out[m] = Factors(Z, softmax(Z), Zf, softmax(Zf), np.array(theta["S_" + m], dtype=dtype),
                         np.array(theta["b_" + m], dtype=dtype), np.array(theta["c_" + m], dtype=dtype))
    return out


@pytest.fixture
def case():
    return random_case()


@pytest.fixture(autouse=True)
def _report_embedding_by_pca(monkeypatch):
    """Figures drawn in the tests embed cells by PCA, not UMAP.

    umap-learn comes with scanpy (the ``tenx`` extra); its first call in a process compiles for about 30 s,
    which would be paid by every test process. The embedding path itself is tested with ``method="pca"`` in
    test_plot.py; the tutorial (run as a subprocess) still takes the user's default.
    """
    from fastjmt import plot

    embed = plot._embed
    monkeypatch.setattr(plot, "_embed", lambda X, method, random_state: embed(X, "pca" if method == "auto"
                                                                               else method, random_state))

"""Bad input gives a clear error naming the argument, before any copy or compilation; odd-but-valid input works."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import fastjmt
from fastjmt import preprocess as pp


@pytest.fixture(scope="module")
def d():
    return fastjmt.simulate(n_rna=60, n_atac=50, n_genes=30, n_regions=40, random_state=3)


def _with(d, **override):
    args = dict(rna=d.rna, atac=d.atac, gene_activity=d.gene_activity, n_shared=3)
    args.update(override)
    return args


def _nan(M):
    M = M.astype(np.float64)
    M.data[0] = np.nan
    return M


def _inf(M):
    M = M.astype(np.float64)
    M.data[-1] = np.inf
    return M


def _neg(M):
    M = M.copy()
    M.data[0] = -1
    return M


BAD = [
    # (id, override builder, error type, message fragment)
    ("rna None", lambda d: dict(rna=None), TypeError, "rna is required"),
    ("atac a string", lambda d: dict(atac="atac.h5ad"), TypeError, "atac must be"),
    ("rna 1-D", lambda d: dict(rna=np.ones(10)), ValueError, "rna must be a 2-D"),
    ("rna 3-D", lambda d: dict(rna=np.ones((4, 30, 2))), ValueError, "rna must be a 2-D"),
    ("rna strings", lambda d: dict(rna=np.full((60, 30), "a")), TypeError, "rna must hold real numbers"),
    ("rna object dtype", lambda d: dict(rna=np.empty((60, 30), dtype=object)), TypeError, "real numbers"),
    ("rna complex dense", lambda d: dict(rna=d.rna.toarray() + 1j), TypeError, "complex"),
    ("atac complex sparse", lambda d: dict(atac=d.atac.astype(np.complex128)), TypeError, "complex"),
    ("rna ragged lists", lambda d: dict(rna=[[1, 2], [3]]), TypeError, "could not be read"),
    ("rna empty rows", lambda d: dict(rna=sp.csr_matrix((0, 30))), ValueError, "rna is empty"),
    ("atac empty columns", lambda d: dict(atac=sp.csr_matrix((50, 0))), ValueError, "atac is empty"),
    ("rna NaN", lambda d: dict(rna=_nan(d.rna)), ValueError, "rna contains NaN"),
    ("atac Inf", lambda d: dict(atac=_inf(d.atac)), ValueError, "atac contains NaN or infinite"),
    ("gene_activity NaN", lambda d: dict(gene_activity=_nan(d.gene_activity)), ValueError, "gene_activity contains"),
    ("rna negative", lambda d: dict(rna=_neg(d.rna)), ValueError, "rna has negative"),
    ("atac negative", lambda d: dict(atac=_neg(d.atac)), ValueError, "atac has negative"),
    ("gene_activity negative", lambda d: dict(gene_activity=_neg(d.gene_activity)), ValueError,
     "gene_activity has negative"),
    ("gene_activity negative, preprocess off", lambda d: dict(gene_activity=_neg(d.gene_activity), preprocess=False),
     ValueError, "gene_activity has negative"),
    ("gene_activity transposed", lambda d: dict(gene_activity=d.gene_activity.T), ValueError, "looks transposed"),
    ("gene count mismatch", lambda d: dict(rna=d.rna[:, :20]), ValueError, "gene_activity must be genes"),
    ("region count mismatch", lambda d: dict(atac=d.atac[:, :20]), ValueError, "gene_activity must be genes"),
    ("n_shared zero", lambda d: dict(n_shared=0, n_rna_only=2), ValueError, "nothing to integrate"),
    ("n_shared negative", lambda d: dict(n_shared=-2), ValueError, "n_shared"),
    ("n_shared float", lambda d: dict(n_shared=2.5), ValueError, "n_shared"),
    ("n_shared bool", lambda d: dict(n_shared=True), ValueError, "n_shared"),
    ("n_rna_only negative", lambda d: dict(n_rna_only=-1), ValueError, "n_rna_only"),
    ("n_atac_only string", lambda d: dict(n_atac_only="1"), ValueError, "n_atac_only"),
    ("K of one", lambda d: dict(n_shared=1), ValueError, "K = "),
    ("K larger than cells", lambda d: dict(n_shared=55), ValueError, "fewer than K"),
    ("weight negative", lambda d: dict(a3=-1.0), ValueError, "a3"),
    ("weight NaN", lambda d: dict(a1=float("nan")), ValueError, "a1"),
    ("weight inf", lambda d: dict(a6=float("inf")), ValueError, "a6"),
    ("weight string", lambda d: dict(a5="100"), ValueError, "a5"),
    ("max_iter zero", lambda d: dict(max_iter=0), ValueError, "max_iter"),
    ("patience zero", lambda d: dict(patience=0), ValueError, "patience"),
    ("n_init zero", lambda d: dict(n_init=0), ValueError, "n_init"),
    ("tol negative", lambda d: dict(tol=-1e-3), ValueError, "tol"),
    ("learning_rate zero", lambda d: dict(learning_rate=0), ValueError, "learning_rate"),
    ("init_scale negative", lambda d: dict(init_scale=-1), ValueError, "init_scale"),
    ("batch_cells zero", lambda d: dict(batch_cells=0.0), ValueError, "batch_cells"),
    ("batch_features above one", lambda d: dict(batch_features=1.5), ValueError, "batch_features"),
    ("optimizer unknown", lambda d: dict(optimizer="lbfgs"), ValueError, "optimizer"),
    ("init unknown", lambda d: dict(init="pca"), ValueError, "init"),
    ("dtype int", lambda d: dict(dtype=np.int32), ValueError, "dtype"),
    ("dtype float16", lambda d: dict(dtype=np.float16), ValueError, "dtype"),
    ("dtype nonsense", lambda d: dict(dtype="fp32x"), ValueError, "dtype"),
    ("n_threads zero", lambda d: dict(n_threads=0), ValueError, "n_threads"),
    ("random_state string", lambda d: dict(random_state="x"), TypeError, "random_state"),
    ("random_state negative", lambda d: dict(random_state=-3), ValueError, "random_state"),
    ("callback not callable", lambda d: dict(callback=3), TypeError, "callback"),
    ("preprocess not bool", lambda d: dict(preprocess="yes"), TypeError, "preprocess"),
    ("verbose negative", lambda d: dict(verbose=-1), ValueError, "verbose"),
    ("low_memory not bool", lambda d: dict(low_memory="no"), TypeError, "low_memory"),
]


@pytest.mark.parametrize("builder, err, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_clear_error_before_any_copy(d, builder, err, match, monkeypatch):
    calls = []
    monkeypatch.setattr(pp, "to_csr", lambda *a, **k: calls.append(1))
    with pytest.raises(err, match=match):
        fastjmt.fit(**_with(d, **builder(d)))
    assert not calls  # refused before the data were copied or converted


def test_there_are_many_distinct_bad_inputs():
    assert len({b[0] for b in BAD}) == len(BAD) >= 25


def _fit(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastjmt.ConvergenceWarning)
        return fastjmt.fit(max_iter=4, dtype=np.float64, **kw)


def test_duplicate_and_unsorted_indices_are_canonicalised_on_a_copy(d):
    base = _fit(**_with(d))
    # the same RNA matrix with every entry split in two halves, stored unsorted
    coo = d.rna.tocoo()
    rows = np.r_[coo.row, coo.row][::-1]
    cols = np.r_[coo.col, coo.col][::-1]
    vals = np.r_[coo.data / 2, coo.data / 2][::-1]
    order = np.lexsort((np.arange(rows.size)[::-1], rows))
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=60))]
    messy = sp.csr_matrix((vals[order], cols[order], indptr), shape=d.rna.shape)
    assert not messy.has_canonical_format and messy.nnz == 2 * d.rna.nnz
    snapshot = (messy.data.copy(), messy.indices.copy())
    res = _fit(**_with(d, rna=messy))
    np.testing.assert_allclose(res.C_rna, base.C_rna, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(messy.data, snapshot[0])
    np.testing.assert_array_equal(messy.indices, snapshot[1])


def test_sparse_arrays_bool_and_lil_inputs_work(d):
    base = _fit(**_with(d))
    res = _fit(**_with(d, rna=sp.csr_array(d.rna), atac=d.atac.astype(bool), gene_activity=d.gene_activity.tolil()))
    np.testing.assert_allclose(res.C_atac, base.C_atac, rtol=1e-9, atol=1e-12)


def test_negative_data_allowed_without_preprocessing(d):
    from fastjmt import preprocess as pp_

    G = pp_.preprocess_rna(pp_.to_csr(d.rna))
    G.data -= 0.5  # centred data of the caller's own making
    res = _fit(**_with(d, rna=G, preprocess=False))
    assert np.all(np.isfinite(res.C_rna))

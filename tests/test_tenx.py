"""What Cell Ranger, Cell Ranger ATAC and Cell Ranger ARC write, read through scanpy (skipped without it).

The files are small fakes written here in the Cell Ranger formats: a feature-barcode matrix ``.h5`` (v3 layout),
``filtered_feature_bc_matrix/`` (matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz) and
``filtered_peak_bc_matrix/`` (matrix.mtx, peaks.bed, barcodes.tsv).
"""

import gzip
import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

pytest.importorskip("scanpy")
h5py = pytest.importorskip("h5py")

import fastjmt  # noqa: E402
import fastjmt.__main__ as cli  # noqa: E402
from fastjmt.tenx import read_10x  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::fastjmt.api.ConvergenceWarning")

N_CELLS, N_GENES, N_REGIONS = 200, 100, 200


@pytest.fixture(scope="module")
def sim():
    return fastjmt.simulate(n_rna=N_CELLS, n_atac=N_CELLS, n_genes=N_GENES, n_regions=N_REGIONS, n_shared=2,
                            separation=1.0, random_state=0)


def _features(sim):
    ids = [f"ENSG{i:011d}" for i in range(N_GENES)]  # unversioned, as 10x writes them
    names = [f"Gene{i}" for i in range(N_GENES)]
    peaks = [("chr1", 1000 * j, 1000 * j + 500) for j in range(N_REGIONS)]
    barcodes = [f"AAAC{i:06d}-1" for i in range(N_CELLS)]
    return ids, names, peaks, barcodes


def _write_h5(path, sim, rna=True, atac=True):
    """A Cell Ranger (ARC) feature-barcode matrix .h5: features × cells, CSC by cell."""
    ids, names, peaks, barcodes = _features(sim)
    blocks, fid, fname, ftype = [], [], [], []
    if rna:
        blocks.append(sp.csr_matrix(sim.rna))
        fid += ids
        fname += names
        ftype += ["Gene Expression"] * N_GENES
    if atac:
        blocks.append(sp.csr_matrix(sim.atac))
        pk = [f"{c}:{s}-{e}" for c, s, e in peaks]
        fid += pk
        fname += pk
        ftype += ["Peaks"] * N_REGIONS
    X = sp.hstack(blocks).tocsr().astype(np.int32)  # cells × features = the CSC of features × cells
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        m.create_dataset("data", data=X.data)
        m.create_dataset("indices", data=X.indices.astype(np.int64))
        m.create_dataset("indptr", data=X.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([X.shape[1], X.shape[0]], dtype=np.int32))
        ft = m.create_group("features")
        ft.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))
        ft.create_dataset("feature_type", data=np.array(ftype, dtype="S"))
        ft.create_dataset("genome", data=np.array(["GRCh38"] * len(fid), dtype="S"))
        ft.create_dataset("id", data=np.array(fid, dtype="S"))
        ft.create_dataset("name", data=np.array(fname, dtype="S"))
    return path


def _write_gz(path, lines):
    with gzip.open(path, "wt") as fh:
        fh.writelines(f"{ln}\n" for ln in lines)


def _write_feature_folder(folder, sim):
    ids, names, _, barcodes = _features(sim)
    os.makedirs(folder, exist_ok=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.csr_matrix(sim.rna).T.tocoo().astype(np.int64))  # genes × cells
    _write_gz(folder / "features.tsv.gz", [f"{i}\t{n}\tGene Expression" for i, n in zip(ids, names)])
    _write_gz(folder / "barcodes.tsv.gz", barcodes)
    return folder


def _write_peak_folder(folder, sim):
    _, _, peaks, barcodes = _features(sim)
    os.makedirs(folder, exist_ok=True)
    scipy.io.mmwrite(str(folder / "matrix.mtx"), sp.csr_matrix(sim.atac).T.tocoo().astype(np.int64))
    (folder / "peaks.bed").write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in peaks))
    (folder / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))
    return folder


def _write_gtf(path, sim):
    """GENCODE-style GTF: Ensembl contig names ("1"), versioned gene ids, one gene line spanning its regions."""
    A = sp.csr_matrix(sim.gene_activity)
    with open(path, "w") as fh:
        for i in range(N_GENES):
            c = A.indices[A.indptr[i]:A.indptr[i + 1]]
            ch, s, e = ("1", 1000 * c.min() + 1, 1000 * c.max() + 500) if c.size else \
                ("2", 10_000 * i + 1, 10_000 * i + 100)
            fh.write(f'{ch}\tHAVANA\tgene\t{s}\t{e}\t.\t+\t.\tgene_id "ENSG{i:011d}.5"; gene_name "Gene{i}";\n')
    return path


@pytest.fixture(scope="module")
def outs(sim, tmp_path_factory):
    """A Cell Ranger ARC outs/ folder, plus Cell Ranger and Cell Ranger ATAC matrix folders, and a GTF."""
    root = tmp_path_factory.mktemp("tenx")
    arc = root / "outs"
    arc.mkdir()
    _write_h5(arc / "filtered_feature_bc_matrix.h5", sim)
    _write_feature_folder(root / "filtered_feature_bc_matrix", sim)
    _write_peak_folder(root / "filtered_peak_bc_matrix", sim)
    _write_h5(root / "rna_only.h5", sim, atac=False)
    _write_gtf(root / "genes.gtf", sim)
    return root


def test_multiome_h5_is_split_by_feature_type(sim, outs):
    mods = read_10x(outs / "outs")  # the outs/ folder: its filtered_feature_bc_matrix.h5 is found
    rna, atac = mods["rna"], mods["atac"]
    assert rna.shape == (N_CELLS, N_GENES) and atac.shape == (N_CELLS, N_REGIONS)
    assert list(rna.var_names[:2]) == ["ENSG00000000000", "ENSG00000000001"]
    assert list(rna.var["gene_symbols"][:2]) == ["Gene0", "Gene1"]
    assert list(atac.var_names[:2]) == ["chr1:0-500", "chr1:1000-1500"]
    assert (sp.csr_matrix(rna.X) != sp.csr_matrix(sim.rna)).nnz == 0
    assert (sp.csr_matrix(atac.X) != sp.csr_matrix(sim.atac)).nnz == 0


def test_cell_ranger_and_cell_ranger_atac_matrix_folders(sim, outs):
    rna = read_10x(outs / "filtered_feature_bc_matrix")["rna"]
    atac = read_10x(outs / "filtered_peak_bc_matrix")["atac"]
    assert rna.shape == (N_CELLS, N_GENES) and atac.shape == (N_CELLS, N_REGIONS)
    assert (sp.csr_matrix(rna.X) != sp.csr_matrix(sim.rna)).nnz == 0
    assert (sp.csr_matrix(atac.X) != sp.csr_matrix(sim.atac)).nnz == 0
    assert atac.var_names[1] == "chr1:1000-1500" and atac.obs_names[0] == "AAAC000000-1"
    assert read_10x(outs / "rna_only.h5")["atac"] is None
    (outs / "empty").mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="no 10x matrix here"):
        read_10x(outs / "empty")
    bad = outs / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not a 10x Genomics feature-barcode matrix"):
        read_10x(bad)


def test_one_command_from_a_cell_ranger_arc_folder_to_a_report(sim, outs, capsys):
    out = outs / "report"
    assert cli.main(["fit", "--multiome", str(outs / "outs"), "--genes", str(outs / "genes.gtf"), "--n-shared", "2",
                     "--max-iter", "20", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert all(ln.startswith("fastjmt: warning: ") for ln in captured.err.splitlines() if ln.strip())
    linked = int((np.diff(sp.csr_matrix(sim.gene_activity).indptr) > 0).sum())
    assert f"gene activity: {linked} of {N_GENES} RNA genes" in text
    report = (out / "report.md").read_text()
    assert f"gene activity coverage: {linked} of {N_GENES} RNA genes" in report
    res = fastjmt.load_result(out / "result.npz")
    assert res.link_coverage["genes_linked"] == linked
    # the 10x path integrates (chance is 0); on data this small (100 genes, 200 regions) the joint start
    # places ATAC cells less well than on realistic sizes: pooled 0.85 (RNA 1.0, ATAC 0.70) against 0.92 for the
    # spectral start, and equal at 1,000 cells with 300 genes (docs/quality.md, "Joint start")
    assert fastjmt.pooled_scores(res, sim.rna_labels, sim.atac_labels)["ari_pooled"] > 0.8
    cells = np.loadtxt(out / "clusters_rna.tsv", dtype=str, skiprows=1)[:, 0]
    assert cells[0] == "AAAC000000-1"


def test_cli_reads_10x_folders_features_tsv_and_peaks_bed(sim, outs, tmp_path):
    assert cli.main(["fit", "--rna", str(outs / "filtered_feature_bc_matrix"), "--atac",
                     str(outs / "filtered_peak_bc_matrix"), "--genes", str(outs / "genes.gtf"), "--n-shared", "2",
                     "--max-iter", "3", "--out", str(tmp_path / "a")]) == 0
    # cells × features .mtx with the 10x name files next to it
    scipy.io.mmwrite(str(tmp_path / "rna.mtx"), sp.csr_matrix(sim.rna))
    scipy.io.mmwrite(str(tmp_path / "atac.mtx"), sp.csr_matrix(sim.atac))
    with gzip.open(outs / "filtered_feature_bc_matrix" / "features.tsv.gz", "rt") as fh:
        (tmp_path / "features.tsv").write_text(fh.read())
    assert cli.main(["fit", "--rna", str(tmp_path / "rna.mtx"), "--atac", str(tmp_path / "atac.mtx"),
                     "--gene-names", str(tmp_path / "features.tsv"),
                     "--region-names", str(outs / "filtered_peak_bc_matrix" / "peaks.bed"),
                     "--genes", str(outs / "genes.gtf"), "--n-shared", "2", "--max-iter", "3",
                     "--out", str(tmp_path / "b")]) == 0
    assert fastjmt.load_result(tmp_path / "b" / "result.npz").link_coverage["genes_linked"] > 0


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    err = [ln for ln in err if not ln.startswith("fastjmt: warning")]
    assert len(err) == 1 and err[0].startswith("fastjmt fit: error:"), err
    assert "Traceback" not in err[0]
    for n in needles:
        assert n in err[0], (n, err[0])


def test_unusable_files_end_in_one_line_naming_the_option_and_the_file(sim, outs, tmp_path, capsys):
    genes_by_cells = tmp_path / "matrix.mtx"
    scipy.io.mmwrite(str(genes_by_cells), sp.csr_matrix(sim.rna).T)  # the 10x orientation
    with gzip.open(outs / "filtered_feature_bc_matrix" / "features.tsv.gz", "rt") as fh:
        (tmp_path / "features.tsv").write_text(fh.read())
    scipy.io.mmwrite(str(tmp_path / "atac.mtx"), sp.csr_matrix(sim.atac))
    sp.save_npz(tmp_path / "ga.npz", sp.csr_matrix(sim.gene_activity))
    base = ["fit", "--n-shared", "2", "--max-iter", "2", "--out", str(tmp_path / "o")]
    assert cli.main(base + ["--rna", str(genes_by_cells), "--atac", str(tmp_path / "atac.mtx"),
                            "--gene-names", str(tmp_path / "features.tsv"),
                            "--region-names", str(outs / "filtered_peak_bc_matrix" / "peaks.bed"),
                            "--genes", str(outs / "genes.gtf")]) == 2
    _one_line_error(capsys, "--gene-names", "transposed?")
    assert cli.main(base + ["--rna", str(genes_by_cells), "--atac", str(tmp_path / "atac.mtx"),
                            "--gene-activity", str(tmp_path / "ga.npz")]) == 2
    _one_line_error(capsys, "--rna", str(genes_by_cells), "transposed?")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert cli.main(base + ["--rna", str(bad), "--atac", str(tmp_path / "atac.mtx"),
                            "--gene-activity", str(tmp_path / "ga.npz")]) == 2
    _one_line_error(capsys, "--rna", str(bad))
    assert cli.main(base + ["--rna", str(outs / "filtered_peak_bc_matrix"), "--atac", str(tmp_path / "atac.mtx"),
                            "--gene-activity", str(tmp_path / "ga.npz")]) == 2
    _one_line_error(capsys, "--rna", "ATAC peaks only")
    assert cli.main(base + ["--multiome", str(outs / "outs"), "--genes", str(tmp_path / "missing.gtf")]) == 2
    _one_line_error(capsys, "--genes", "missing.gtf")
    # a single-modality file given as --multiome: the error names --multiome, not an option never passed
    assert cli.main(base + ["--multiome", str(outs / "rna_only.h5"), "--genes", str(outs / "genes.gtf")]) == 2
    _one_line_error(capsys, "--multiome", "gene expression only; a Cell Ranger ARC output holds both")
    with pytest.raises(cli.UsageError) as err:  # --debug shows the exception and its cause
        cli.main(base + ["--multiome", str(outs / "outs"), "--genes", str(tmp_path / "missing.gtf"), "--debug"])
    assert isinstance(err.value.__cause__, FileNotFoundError)

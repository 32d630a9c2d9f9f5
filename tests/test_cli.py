import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import fastjmt
import fastjmt.__main__ as cli

pytestmark = pytest.mark.filterwarnings("ignore::fastjmt.api.ConvergenceWarning")


def test_main_job_runs_and_reports(capsys):
    assert cli.main(["--n-cells", "300", "--scenario", "unequal"]) == 0
    out = capsys.readouterr().out
    assert "ARI  RNA" in out and "pooled" in out and "ATAC cells in RNA-only clusters" in out
    assert out.count("compile: ") == 1  # said once, whether the kernels were compiled or loaded from the cache
    assert "converged=True" in out and "warning" not in out


def test_compile_timer_counts_compiling_not_calling():
    import numba

    @numba.njit
    def twice(x):
        return 2 * x

    with cli._CompileTimer() as first:
        twice(3)
    with cli._CompileTimer() as again:
        twice(4)
    assert first.seconds > 0 and again.seconds == 0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = fastjmt.simulate(n_rna=200, n_atac=180, n_genes=100, n_regions=200, n_shared=2, n_rna_only=1,
                         random_state=0)
    root = tmp_path_factory.mktemp("cli")
    sp.save_npz(root / "rna.npz", d.rna)
    scipy.io.mmwrite(str(root / "atac.mtx"), d.atac)
    sp.save_npz(root / "ga.npz", d.gene_activity)
    np.savetxt(root / "rna_labels.txt", d.rna_labels, fmt="%s")
    np.savetxt(root / "atac_labels.txt", d.atac_labels, fmt="%s")
    genes = [f"g{i}" for i in range(100)]
    regions = [f"chr1:{1000 * j}-{1000 * j + 500}" for j in range(200)]
    np.savetxt(root / "genes.txt", genes, fmt="%s")
    np.savetxt(root / "regions.txt", regions, fmt="%s")
    (root / "genes.bed").write_text("".join(f"chr1\t{2000 * i + 100}\t{2000 * i + 600}\t+\tg{i}\n" for i in range(100)))
    return d, root


def test_fit_command_writes_result_tables_and_report(files, capsys):
    d, root = files
    out = root / "out"
    code = cli.main(["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"),
                     "--gene-activity", str(root / "ga.npz"), "--n-shared", "2", "--n-rna-only", "1",
                     "--max-iter", "40", "--rna-labels", str(root / "rna_labels.txt"),
                     "--atac-labels", str(root / "atac_labels.txt"), "--out", str(out)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    res = fastjmt.load_result(out / "result.npz")
    direct = fastjmt.fit(d.rna, d.atac, d.gene_activity, n_shared=2, n_rna_only=1, max_iter=40)
    np.testing.assert_array_equal(res.C_rna, direct.C_rna)
    table = np.loadtxt(out / "clusters_atac.tsv", dtype=str, skiprows=1)
    assert table.shape == (180, 2) and (table[:, 1].astype(int) == res.labels_atac).all()
    report = (out / "report.md").read_text()
    assert "| ARI |" in report and "epochs: 40" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "figures skipped" in report
    else:
        assert all((out / f"{n}.png").exists() for n in ("loss", "association", "composition", "embedding"))


def test_fit_command_builds_gene_activity_from_coordinates(files, capsys):
    d, root = files
    out = root / "out_bed"
    assert cli.main(["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"),
                     "--genes", str(root / "genes.bed"), "--gene-names", str(root / "genes.txt"),
                     "--region-names", str(root / "regions.txt"), "--n-shared", "2", "--n-rna-only", "1",
                     "--max-iter", "5", "--out", str(out)]) == 0
    assert os.path.exists(out / "result.npz")
    capsys.readouterr()
    assert cli.main(["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"), "--n-shared", "2",
                     "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "fastjmt fit: error: pass --gene-activity or --genes"


def test_fit_command_reads_h5ad(files):
    anndata = pytest.importorskip("anndata")
    d, root = files
    rna = anndata.AnnData(d.rna.copy())
    rna.var_names = [f"g{i}" for i in range(100)]
    atac = anndata.AnnData(d.atac.tocsr().copy())
    atac.var_names = [f"chr1:{1000 * j}-{1000 * j + 500}" for j in range(200)]
    rna.write_h5ad(root / "rna.h5ad")
    atac.write_h5ad(root / "atac.h5ad")
    out = root / "out_h5ad"
    assert cli.main(["fit", "--rna", str(root / "rna.h5ad"), "--atac", str(root / "atac.h5ad"), "--genes",
                     str(root / "genes.bed"), "--n-shared", "2", "--n-rna-only", "1", "--max-iter", "5",
                     "--out", str(out)]) == 0
    cells = np.loadtxt(out / "clusters_rna.tsv", dtype=str, skiprows=1)[:, 0]
    assert list(cells[:3]) == list(rna.obs_names[:3])


def test_fit_command_reads_10x_name_files_and_reports_coverage(files, capsys):
    """--gene-names as a 10x features.tsv (id, name, type), --region-names as a 3-column peaks.bed."""
    d, root = files
    (root / "features.tsv").write_text("".join(f"ENSG{i:011d}\tg{i}\tGene Expression\n" for i in range(100)))
    (root / "peaks.bed").write_text("".join(f"chr1\t{1000 * j}\t{1000 * j + 500}\n" for j in range(200)))
    out = root / "out_10x_names"
    assert cli.main(["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"),
                     "--genes", str(root / "genes.bed"), "--gene-names", str(root / "features.tsv"),
                     "--region-names", str(root / "peaks.bed"), "--n-shared", "2", "--n-rna-only", "1",
                     "--max-iter", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = fastjmt.load_result(out / "result.npz")
    assert res.link_coverage["genes_linked"] > 0
    assert f"gene activity: {res.link_coverage['genes_linked']} of 100 RNA genes" in text
    assert "gene activity coverage" in (out / "report.md").read_text()


def test_fit_command_input_errors_are_one_line(files, capsys):
    d, root = files
    (root / "wrong_regions.txt").write_text("".join(f"chr9:{j}-{j + 1}\n" for j in range(200)))
    assert cli.main(["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"),
                     "--genes", str(root / "genes.bed"), "--gene-names", str(root / "genes.txt"),
                     "--region-names", str(root / "wrong_regions.txt"), "--n-shared", "2",
                     "--out", str(root / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fastjmt fit: error: --genes") and "no link" in err
    assert "'g0'" in err and "'chr9:0-1'" in err


def test_fit_command_checks_label_files_before_the_fit(files, capsys):
    d, root = files
    (root / "short_labels.txt").write_text("".join(f"{x}\n" for x in d.rna_labels[:-1]))
    argv = ["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"),
            "--gene-activity", str(root / "ga.npz"), "--n-shared", "2", "--n-rna-only", "1",
            "--out", str(root / "o_short")]
    assert cli.main(argv + ["--rna-labels", str(root / "short_labels.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--rna-labels" in err and f"has {len(d.rna_labels) - 1} labels" in err
    assert not (root / "o_short").exists()  # refused before any work
    assert cli.main(argv + ["--resolution", "-1"]) == 2
    assert "--resolution" in capsys.readouterr().err


def test_transform_command_maps_new_cells_onto_a_fit(files, capsys):
    d, root = files
    out = root / "out_tr"
    assert cli.main(["fit", "--rna", str(root / "rna.npz"), "--atac", str(root / "atac.mtx"),
                     "--gene-activity", str(root / "ga.npz"), "--n-shared", "2", "--n-rna-only", "1",
                     "--out", str(out)]) == 0
    sp.save_npz(root / "new_rna.npz", d.rna.tocsr()[:25])
    mapped = root / "mapped"
    capsys.readouterr()
    assert cli.main(["transform", "--model", str(out), "--rna", str(root / "new_rna.npz"),
                     "--out", str(mapped)]) == 0
    assert "25 cells mapped" in capsys.readouterr().out
    table = np.loadtxt(mapped / "clusters_rna.tsv", dtype=str, skiprows=1)
    fitted = np.loadtxt(out / "clusters_rna.tsv", dtype=str, skiprows=1)
    assert table.shape == (25, 3) and (table[:, 1] == fitted[:25, 1]).all()
    with np.load(mapped / "mapped.npz") as z:
        assert z["C_rna"].shape == (25, 3)
    assert cli.main(["transform", "--model", str(root / "nowhere"), "--rna", str(root / "new_rna.npz"),
                     "--out", str(mapped)]) == 2
    assert "--model" in capsys.readouterr().err
    sp.save_npz(root / "bad_rna.npz", d.rna.tocsr()[:5, :50])
    assert cli.main(["transform", "--model", str(out), "--rna", str(root / "bad_rna.npz"), "--out", str(mapped)]) == 2
    assert "features" in capsys.readouterr().err

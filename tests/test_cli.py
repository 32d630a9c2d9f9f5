import fastjmt.__main__ as cli


def test_main_job_runs_and_reports(capsys):
    assert cli.main(["--n-cells", "300", "--scenario", "unequal"]) == 0
    out = capsys.readouterr().out
    assert "ARI  RNA" in out and "pooled" in out and "ATAC cells in RNA-only clusters" in out

"""The docs build with warnings as errors, and the tutorial runs as written (skipped without the extras)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           os.path.join(ROOT, "docs"), str(tmp_path / "html")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "html" / "api.html").read_text()
    assert "batch_cells" in api and "fit_anndata" in api  # docstrings made it in


def test_tutorial_runs_as_written(tmp_path):
    pytest.importorskip("anndata")
    pytest.importorskip("matplotlib")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "examples", "tutorial.py"), str(tmp_path)],
                          capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr
    assert "'ari_pooled': 1.0" in proc.stdout or "'ari_pooled': 0.9" in proc.stdout
    for name in ("result.npz", "report.md", "embedding.png", "clusters_rna.tsv"):
        assert (tmp_path / name).exists()

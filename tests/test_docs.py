"""The user guide builds with MkDocs in strict mode (any warning fails the build)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    generated = ROOT / "docs" / "_generated"
    generated.mkdir(exist_ok=True)
    help_text = subprocess.run([sys.executable, "-m", "sklearn_cnat.cli", "run", "--help"],
                               capture_output=True, text=True, check=True).stdout
    (generated / "cnat_run_help.txt").write_text(help_text)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "CNATClassifier" in api and "worst_case_expectation" in api
    shutil.rmtree(tmp_path / "site")

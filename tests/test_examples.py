"""Every script in examples/ runs (small sizes: CNAT_EXAMPLES_SMALL=1)."""

import os
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, monkeypatch, close_figures):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("CNAT_EXAMPLES_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(path.parent)
    runpy.run_path(str(path), run_name="__main__")


def test_there_are_examples():
    assert EXAMPLES, "examples/ must hold at least one script"

"""docs/api.md and docs/cli.md read as plain markdown on a fresh clone, and api.md lists every public name."""

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODULES = ["sklearn_cnat", "sklearn_cnat.classifier", "sklearn_cnat.partition", "sklearn_cnat.baselines",
           "sklearn_cnat.evidence", "sklearn_cnat.budgets", "sklearn_cnat.aggregation", "sklearn_cnat.sets",
           "sklearn_cnat.losses", "sklearn_cnat.certificates", "sklearn_cnat.relabel", "sklearn_cnat.metrics",
           "sklearn_cnat.model_selection", "sklearn_cnat.pipeline", "sklearn_cnat.display", "sklearn_cnat.callbacks",
           "sklearn_cnat.models", "sklearn_cnat.recipes", "sklearn_cnat.features", "sklearn_cnat.datasets",
           "sklearn_cnat.exceptions"]


@pytest.mark.parametrize("page", ["api.md", "cli.md"])
def test_plain_markdown(page):
    text = (DOCS / page).read_text()
    assert "--8<--" not in text and ":::" not in text  # no include, no directive only a build expands


@pytest.mark.parametrize("module", MODULES)
def test_api_lists_every_public_name(module):
    text = (DOCS / "api.md").read_text()
    missing = [name for name in importlib.import_module(module).__all__
               if name != "__version__" and not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"docs/api.md does not mention {module}: {missing}"

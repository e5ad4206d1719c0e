"""README's Python quickstart runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert 0.0 <= namespace["cert"].coverage <= 1.0
    cov = namespace["search"].cv_results_["mean_test_cov"]
    assert len(set(round(float(c), 6) for c in cov)) >= 3  # the grid's coverage scores differ

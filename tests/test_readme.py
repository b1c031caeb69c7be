"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert 0.0 <= namespace["sparsity_report"](namespace["model"], namespace["groups"])["group"] <= 1.0
    assert sum(p.numel() for p in namespace["small"].parameters()) <= sum(
        p.numel() for p in namespace["model"].parameters()
    )

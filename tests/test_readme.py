"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

from l2sparse.sparsity import max_output_difference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {"max_output_difference": max_output_difference}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    model, small = namespace["model"], namespace["small"]
    assert 0.0 <= namespace["sparsity_report"](model, namespace["groups"])["group"] <= 1.0
    x = namespace["data"]["image"][:4]
    assert namespace["max_output_difference"](model.eval(), small.eval(), x) <= 1e-5

"""What every command's report shares: the markdown table, the layer labels of its plots, and writing
``report.md`` beside ``report.json``.

The reports themselves are typed (``TrainReport``, ``MetaReport``, ``AdaptReport``, ``LomtReport``: ``TypedDict``s
next to the code that builds them), so they stay plain JSON-ready dicts that a type checker and the docs can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2sparse.checkpoint import save_json, save_text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; every row has one cell per header column."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"markdown_table: a row has {len(row)} cells for {len(header)} columns: {row}")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def layer_label(layer: str) -> str:
    """A backbone layer's short name for a plot axis: ``backbone.layer2.0.conv1.conv`` -> ``layer2.0.conv1``."""
    return layer.removeprefix("backbone.").removesuffix(".conv")


def write_report(report: Mapping[str, Any], title: str, out: Path) -> None:
    """``out/report.md`` (``# title``, the report's ``table`` and, if it has one, its ``headline``) and
    ``out/report.json``, both written atomically."""
    parts = [f"# {title}", report["table"], *([report["headline"]] if "headline" in report else [])]
    save_text("\n\n".join(parts) + "\n", out / "report.md")
    save_json(report, out / "report.json")

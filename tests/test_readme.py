"""Every Python block of the README runs as written, in order, in one namespace; every documented command line
parses with its command's own parser."""

from __future__ import annotations

import importlib
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

from l2sparse.sparsity import max_output_difference

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, flags=re.S)


def test_every_python_block_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks' relative paths (runs/cache) land here
    python = blocks("python")
    assert len(python) == 3, "README.md: expected the API, adaptation and meta-gradient examples"
    ns: dict = {}
    for i, code in enumerate(python):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
    model, small = ns["model"], ns["small"]
    assert 0.0 <= ns["sparsity_report"](model, ns["groups"])["group"] <= 1.0
    assert max_output_difference(model.eval(), small.eval(), ns["data"]["image"][:4]) <= 1e-5
    # adaptation: the learned init met its budget, and its zero groups stayed zero through fine-tuning
    adapted_sparsity = ns["sparsity_report"](ns["adapted"], ns["channel_groups"](ns["adapted"]))["group"]
    assert adapted_sparsity == pytest.approx(0.5, abs=0.03)
    assert math.isfinite(ns["metrics"]["mean_angle"]) and ns["info"]["lambda"] > 0
    assert (tmp_path / "runs" / "cache").is_dir()
    # meta-gradient: λ receives one
    assert ns["rho"].grad is not None and torch.isfinite(ns["rho"].grad) and ns["rho"].grad != 0


def command_lines() -> list[list[str]]:
    """``python -m l2sparse.<command> ...`` lines of the bash blocks (continuations joined, comments dropped)."""
    found = []
    for code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:2] == ["python", "-m"] and words[2].startswith("l2sparse.") and "...same" not in part:
                    found.append(words[2:])
    return found


def command_module(name: str):
    """The module that builds ``python -m name``'s parser: the module itself, or a package's ``cli`` or
    ``__main__``."""
    for candidate in (name, f"{name}.cli", f"{name}.__main__"):
        try:
            module = importlib.import_module(candidate)
        except ModuleNotFoundError:
            continue
        if hasattr(module, "build_parser"):
            return module
    raise AssertionError(f"{name}: no module of it builds a parser")


@pytest.mark.parametrize("words", command_lines(), ids=lambda w: " ".join(w)[:60])
def test_every_documented_command_line_parses(words):
    command_module(words[0]).build_parser().parse_args(words[1:])  # an unknown or mistyped option exits 2 here


def test_the_command_lines_cover_every_command():
    assert {w[0] for w in command_lines()} == {
        "l2sparse.adapt",
        "l2sparse.train",
        "l2sparse.meta_train",
        "l2sparse.lomt",
        "l2sparse.tasks",
    }

"""Generate the CLI reference and the API reference pages when the site is built (run by mkdocs-gen-files).

Every module of ``l2sparse`` that defines ``build_parser`` is a command: its page section is the parser's own
``--help`` text, so the reference cannot drift from the code. Every public module gets an API section rendered
by mkdocstrings from its docstrings, grouped by subpackage.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from functools import partial

import mkdocs_gen_files

import l2sparse

SUBPACKAGES = {
    "sparsity": "Groups, penalty, prox, report and compaction.",
    "models": "Backbones, heads, the multi-task model and the model registry.",
    "data": "Datasets, transforms and episode samplers.",
    "tasks": "The task file format and the task registry.",
    "train": "The fixed-λ trainer: its configuration, the training run, the command line.",
    "meta": "Inner-loop settings, backends, the configuration and the meta-sparsity trainer.",
    "adapt": "The unseen-task experiment: its configuration, the registry of inits, fine-tuning, the report.",
    "lomt": "Layer-optimised multi-task models: layer activity, attachment rules, the pipeline.",
}


def modules() -> list[str]:
    """Every module of the package, ``__main__`` included, sorted by name."""
    found = pkgutil.walk_packages(l2sparse.__path__, prefix="l2sparse.")
    return sorted(m.name for m in found if not m.ispkg)


def cli_page() -> str:
    lines = [
        "# Command-line reference",
        "",
        "Each command's section is its own `--help`, generated from its argument parser when this site is built.",
        "Bad options are one-line errors (`prog: error: ...`) with exit code 2. Every option can also be given in",
        "a YAML file, `--config FILE` (`option: value` pairs); the command line overrides it.",
        "",
    ]
    for name in modules():
        module = importlib.import_module(name)
        if not hasattr(module, "build_parser"):
            continue
        parser = module.build_parser()
        parser.formatter_class = partial(argparse.HelpFormatter, width=100)
        lines += [f"## `{parser.prog}`", "", parser.description or "", "", "```text", parser.format_help(), "```", ""]
    return "\n".join(lines)


def api_pages() -> dict[str, str]:
    """``api/<page>.md`` -> markdown with one mkdocstrings block per public module."""
    names = [n for n in modules() if not n.endswith("__main__")]
    pages = {}
    for sub, summary in SUBPACKAGES.items():
        members = [n for n in names if n.startswith(f"l2sparse.{sub}.")]
        pages[f"api/{sub}.md"] = "\n\n".join([f"# `l2sparse.{sub}`", summary, *(f"::: {n}" for n in members)])
    top = [n for n in names if n.count(".") == 1]
    pages["api/l2sparse.md"] = "\n\n".join(
        ["# `l2sparse`", "Command modules, losses, metrics, weighting, checkpoints.", *(f"::: {n}" for n in top)]
    )
    return pages


with mkdocs_gen_files.open("cli.md", "w") as f:
    f.write(cli_page())
for path, text in api_pages().items():
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)

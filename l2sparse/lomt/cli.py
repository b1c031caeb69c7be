"""``python -m l2sparse.lomt``: the command line of the LOMT pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l2sparse import options
from l2sparse.cli import ArgumentParser, fail
from l2sparse.errors import UserError
from l2sparse.lomt.config import LomtConfig
from l2sparse.lomt.experiment import run

DESCRIPTION = "Layer-optimised multi-task models: each task's head attaches at the layer its own sparse run needs."


def build_parser() -> ArgumentParser:
    return options.parser_for(LomtConfig, "python -m l2sparse.lomt", DESCRIPTION, out="runs/lomt")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    cfg, args = options.parse(parser, LomtConfig, argv)
    try:
        report = run(cfg, args.out, progress=not args.quiet)
    except UserError as e:
        fail(parser.prog, str(e))
    print(report["table"])
    print(f"report: {Path(args.out) / 'report.json'}, heat map: {Path(args.out) / 'activity.png'}")
    return report

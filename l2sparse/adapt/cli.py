"""``python -m l2sparse.adapt``: the command line of the adaptation experiment."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from l2sparse import distributed, options
from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.experiment import run
from l2sparse.cli import ArgumentParser, run_launched

DESCRIPTION = "Adapt sparse backbones to unseen tasks: ``python -m l2sparse.adapt --task unseen``."


def build_parser() -> ArgumentParser:
    return options.parser_for(AdaptConfig, "python -m l2sparse.adapt", DESCRIPTION, out="runs/adapt", launched=True)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    cfg, args = options.parse(parser, AdaptConfig, argv)
    job = partial(run, cfg, args.out, progress=not args.quiet)
    report, main_rank = run_launched(parser.prog, cfg, args.dist_timeout, job)
    if main_rank:
        print(report["table"])
        print(report["headline"])
        print(f"report: {Path(args.out) / 'report.json'}")
    distributed.teardown()
    return report

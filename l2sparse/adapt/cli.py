"""``python -m l2sparse.adapt``: the command line of the adaptation experiment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l2sparse import distributed, options
from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.experiment import run
from l2sparse.cli import ArgumentParser, fail
from l2sparse.errors import UserError

DESCRIPTION = "Adapt sparse backbones to unseen tasks: ``python -m l2sparse.adapt --task unseen``."


def build_parser() -> ArgumentParser:
    return options.parser_for(AdaptConfig, "python -m l2sparse.adapt", DESCRIPTION, out="runs/adapt", launched=True)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    cfg, args = options.parse(parser, AdaptConfig, argv)
    try:
        cfg.validate()  # before joining the process group: a bad option stops every rank alike, at once
        distributed.setup(cfg.device, args.dist_timeout)
        report = run(cfg, args.out, progress=not args.quiet)
    except UserError as e:
        fail(parser.prog, e)
    if not distributed.current().main:
        distributed.teardown()
        return report
    print(report["table"])
    print(report["headline"])
    print(f"report: {Path(args.out) / 'report.json'}")
    distributed.teardown()
    return report

"""``python -m l2sparse.train``: the command line of the fixed-λ trainer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from l2sparse import options
from l2sparse.checkpoint import strict_json
from l2sparse.cli import ArgumentParser, fail
from l2sparse.errors import UserError
from l2sparse.train.config import TrainConfig
from l2sparse.train.trainer import train

DESCRIPTION = 'Fixed-λ multi-task training with group sparsity (the "Less is More" baseline).'


def build_parser() -> ArgumentParser:
    return options.parser_for(TrainConfig, "python -m l2sparse.train", DESCRIPTION, resume=True)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    cfg, args = options.parse(parser, TrainConfig, argv)
    try:
        report = train(cfg, args.out, resume=args.resume, progress=not args.quiet).report
    except UserError as e:
        fail(parser.prog, str(e))
    summary = {t: {k: round(v, 4) for k, v in m.items()} for t, m in report["metrics"].items()}
    print(
        f"group sparsity {report['sparsity']['group']:.3f}, params {report['params']['dense']} -> "
        f"{report['params']['compact']}, MACs {report['macs']['dense']} -> {report['macs']['compact']}"
    )
    print(json.dumps(strict_json(summary), allow_nan=False))  # an undefined metric is null, as in report.json
    print(f"report: {Path(args.out) / 'report.json'}")
    return report

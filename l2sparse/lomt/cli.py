"""``python -m l2sparse.lomt``: the command line of the LOMT pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l2sparse.cli import ArgumentParser, fail
from l2sparse.errors import UserError
from l2sparse.lomt.config import LomtConfig
from l2sparse.lomt.experiment import run
from l2sparse.lomt.rules import RULES

DESCRIPTION = "Layer-optimised multi-task models: each task's head attaches at the layer its own sparse run needs."


def build_parser() -> ArgumentParser:
    d = LomtConfig()
    p = ArgumentParser(prog="python -m l2sparse.lomt", description=DESCRIPTION)
    add = p.add_argument
    add("--dataset", default=d.dataset, help="dataset (default: %(default)s)")
    add("--split", default=d.split, help="split whose seen tasks are used (default: %(default)s)")
    add("--tasks", default=None, help="comma-separated tasks instead of the split's seen tasks")
    add("--data-root", default=None, help="dataset folder (real datasets only)")
    add("--tasks-dir", action="append", default=None, help="extra folder of task files (repeatable)")
    add("--model", default=d.model, help="model (default: %(default)s)")
    add("--lam", type=float, default=d.lam, help="λ of the sparse single-task runs (default: %(default)s)")
    add("--group-mode", default=d.group_mode, help="groups of the sparse runs (default: %(default)s)")
    add("--sparse-steps", type=int, default=d.sparse_steps, help="steps of each sparse run (default: %(default)s)")
    add("--trials", type=int, default=d.trials, help="sparse runs per task (default: %(default)s)")
    add("--threshold", type=float, default=d.threshold, help="active if more groups non-zero (default: 0.01)")
    add("--rule", default=d.rule, help=f"attachment rule: {', '.join(RULES)} (default: %(default)s)")
    add("--epsilon", type=float, default=d.epsilon, help="probe rule tolerance (default: %(default)s)")
    add("--probe-steps", type=int, default=d.probe_steps, help="probe head steps (default: %(default)s)")
    add("--attach", action="append", default=[], metavar="TASK=LAYER", help="fix a task's layer (repeatable)")
    add("--steps", type=int, default=d.steps, help="steps of the LOMT and plain models (default: %(default)s)")
    add("--image-size", type=int, default=d.image_size, help="square image side (default: %(default)s)")
    add("--train-size", type=int, default=d.train_size, help="training images (default: %(default)s)")
    add("--test-size", type=int, default=d.test_size, help="test images (default: %(default)s)")
    add("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    add("--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)")
    add("--out", default="runs/lomt", help="output folder (default: %(default)s)")
    add("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [a for a in args.attach if a.count("=") != 1]
    if bad:
        fail(parser.prog, f"attach: expected TASK=LAYER, got {bad[0]!r}")
    values = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "attach", "tasks")}
    cfg = LomtConfig(
        **values,
        tasks=args.tasks.split(",") if args.tasks else None,
        attach=dict(a.split("=") for a in args.attach),
    )
    try:
        report = run(cfg, args.out, progress=not args.quiet)
    except UserError as e:
        fail(parser.prog, str(e))
    print(report["table"])
    print(f"report: {Path(args.out) / 'report.json'}, heat map: {Path(args.out) / 'activity.png'}")
    return report

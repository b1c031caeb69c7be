"""``python -m l2sparse.adapt``: the command line of the adaptation experiment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l2sparse import distributed
from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.experiment import run
from l2sparse.cli import ArgumentParser, fail
from l2sparse.errors import UserError

DESCRIPTION = "Adapt sparse backbones to unseen tasks: ``python -m l2sparse.adapt --task unseen``."


def build_parser() -> ArgumentParser:
    d = AdaptConfig()
    p = ArgumentParser(prog="python -m l2sparse.adapt", description=DESCRIPTION)
    add = p.add_argument
    add("--task", default=d.task, help="'unseen' (every unseen task of the split) or one task name")
    add("--split", default=d.split, help="split (default: %(default)s)")
    add("--dataset", default=d.dataset, help="dataset (default: %(default)s)")
    add("--data-root", default=None, help="dataset folder (real datasets only)")
    add("--tasks-dir", action="append", default=None, help="extra folder of task files (repeatable)")
    add("--checkpoint", default=None, help="meta_train checkpoint for the meta-sparse init (else trained, cached)")
    add("--model", default=d.model, help="model (default: %(default)s)")
    add("--steps", type=int, default=d.steps, help="adaptation steps (default: %(default)s)")
    add("--shots", type=int, default=d.shots, help="training images of the new task (default: %(default)s)")
    add("--seeds", type=int, default=d.seeds, help="seeds per task and init (default: %(default)s)")
    add(
        "--meta-seeds",
        type=int,
        default=d.meta_seeds,
        help="trained inits per init, each with its own seed; adaptation seed s starts from init s mod this, so the"
        " spread over seeds includes the spread of training (default: %(default)s)",
    )
    add("--lr", type=float, default=d.lr, help="adaptation Adam lr (default: %(default)s)")
    add("--batch-size", type=int, default=d.batch_size, help="adaptation batch (default: %(default)s)")
    add("--image-size", type=int, default=d.image_size, help="square image side (default: %(default)s)")
    add("--train-size", type=int, default=d.train_size, help="meta-train images (default: %(default)s)")
    add("--adapt-size", type=int, default=d.adapt_size, help="images the shots are drawn from (default: %(default)s)")
    add("--test-size", type=int, default=d.test_size, help="test images per task (default: %(default)s)")
    add(
        "--meta-iters", type=int, default=d.meta_iters, help="meta-iterations of both meta inits (default: %(default)s)"
    )
    add(
        "--meta-batch",
        type=int,
        default=d.meta_batch,
        help="episodes per meta-iteration; divides by the processes under torchrun (default: %(default)s)",
    )
    add("--lam-init", type=float, default=d.lam_init, help="initial λ of meta-sparsity (default: %(default)s)")
    add("--budget", type=float, default=None, help="target group sparsity in [0, 1] of the meta-sparse init")
    add("--budget-macs", type=float, default=None, help="target fraction in [0, 1] of the dense backbone's MACs")
    add("--budget-ramp", type=float, default=d.budget_ramp, help="fraction of meta-iters to reach the budget")
    add("--lam-grid", default=",".join(map(str, d.lam_grid)), help="fixed-λ grid (default: %(default)s)")
    add("--fixed-steps", type=int, default=d.fixed_steps, help="fixed-λ training steps (default: %(default)s)")
    add("--eval-every", type=int, default=d.eval_every, help="steps between curve points (default: %(default)s)")
    add("--inits", default=",".join(d.inits), help="inits to compare (default: %(default)s)")
    add("--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)")
    add("--amp", action="store_true", help="bf16 autocast for adaptation (for CUDA)")
    add(
        "--cache-dir",
        default=None,
        help="where trained inits are cached (default: $L2SPARSE_CACHE or ~/.cache/l2sparse)",
    )
    add("--out", default="runs/adapt", help="output folder (default: %(default)s)")
    add("--quiet", action="store_true", help="no progress bars")
    add(
        "--dist-timeout",
        type=float,
        default=distributed.DEFAULT_TIMEOUT_S,
        help="under torchrun: seconds a collective waits for the other ranks (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        grid = [float(v) for v in args.lam_grid.split(",")]
    except ValueError:
        fail(parser.prog, f"lam-grid: expected comma-separated numbers, got {args.lam_grid!r}")
    values = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "lam_grid", "inits", "dist_timeout")}
    cfg = AdaptConfig(**values, lam_grid=grid, inits=args.inits.split(","))
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

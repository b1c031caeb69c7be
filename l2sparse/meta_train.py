"""Meta-sparsity training: ``python -m l2sparse.meta_train --dataset synthetic --split synthetic-default
--backend torchfunc --inner-steps 3 --meta-iters 200 --out runs/meta``.

Writes ``checkpoint.pt`` (atomic, ``--resume`` continues), ``report.json`` (sparsity, parameters, MACs, λ
trajectory, query losses) and ``meta_trajectory.png`` (λ and group sparsity over meta-iterations).

``torchrun --nproc_per_node N -m l2sparse.meta_train ...`` spreads each meta-batch's episodes over N processes
(``--meta-batch`` stays the global meta-batch and must divide by N); rank 0 alone writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from matplotlib.figure import Figure
from torch.distributed.elastic.multiprocessing.errors import record

from l2sparse import distributed
from l2sparse.checkpoint import save_figure, save_json
from l2sparse.cli import ArgumentParser, fail
from l2sparse.data import get_dataset
from l2sparse.errors import UserError
from l2sparse.meta.backends import BACKENDS
from l2sparse.meta.inner import ORDERS
from l2sparse.meta.metasparsity import MetaConfig, MetaSparsity
from l2sparse.train import compaction_summary


def plot_trajectory(log: list[dict], layers: Sequence[str], path: Path) -> None:
    """λ (log scale; one line per layer with per-layer λ), group sparsity, and per-layer group sparsity as a heat
    map (layers × meta-iterations) against the meta-iteration."""
    its = [e["iteration"] for e in log]
    fig = Figure(figsize=(15, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    lams = [e["lambda"] if isinstance(e["lambda"], list) else [e["lambda"]] for e in log]
    for i in range(len(lams[0])):
        ax1.plot(its, [v[i] for v in lams], lw=1)
    ax1.set(xlabel="meta-iteration", ylabel="λ", yscale="log", title="λ (learned; × e^ν with a budget)")
    ax2.plot(its, [e["group_sparsity"] for e in log], color="tab:red", label="group sparsity")
    if "budget_measured" in log[0]:
        ax2.plot(its, [e["budget_measured"] for e in log], color="tab:gray", lw=1, label="budget measure")
        ax2.legend(fontsize=7)
    ax2.set(xlabel="meta-iteration", ylim=(0, 1), title="meta-init size")
    grid = [[e["layer_sparsity"][j] for e in log] for j in range(len(layers))]
    image = ax3.imshow(
        grid,
        aspect="auto",
        vmin=0,
        vmax=1,
        cmap="magma",
        interpolation="nearest",
        extent=(its[0] - 0.5, its[-1] + 0.5, len(layers) - 0.5, -0.5),
    )
    ax3.set_yticks(range(len(layers)))
    ax3.set_yticklabels([la.removeprefix("backbone.").removesuffix(".conv") for la in layers], fontsize=6)
    ax3.set(xlabel="meta-iteration", title="group sparsity per layer")
    fig.colorbar(image, ax=ax3)
    fig.tight_layout()
    save_figure(fig, path)


def report(trainer: MetaSparsity) -> dict:
    """The run's report: the fixed-λ trainer's sparsity/params/macs keys plus the λ trajectory."""
    cfg, log = trainer.cfg, trainer.log
    tail = log[-10:]
    names = [t.name for t in trainer.tasks]
    query = {n: [e["query_loss"][n] for e in tail if n in e["query_loss"]] for n in names}
    return {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "synthetic_data": get_dataset(cfg.dataset).synthetic,
        "model": cfg.model,
        "tasks": [t.name for t in trainer.tasks],
        "backend": cfg.backend,
        "order": cfg.order,
        "lambda": trainer.lam.detach().tolist(),
        "lambda_init": cfg.lam_init,
        "lambda_final": trainer.lam.detach().tolist(),
        "lambda_learned": trainer.rho.detach().exp().tolist(),
        "lambda_trajectory": [e["lambda"] for e in log],
        "group_sparsity_trajectory": [e["group_sparsity"] for e in log],
        "layer_sparsity_trajectory": {
            g.layer: [e["layer_sparsity"][j] for e in log] for j, g in enumerate(trainer.groups)
        },
        "budget": None
        if trainer.budget is None
        else {
            "kind": trainer.budget.kind,
            "target": trainer.budget.target,
            "measured_final": log[-1]["budget_measured"],
            "nu_final": trainer.nu,
            "target_trajectory": [e["budget_target"] for e in log],
            "measured_trajectory": [e["budget_measured"] for e in log],
        },
        "query_loss_final": {n: sum(v) / len(v) for n, v in query.items() if v},
        "meta_iterations": trainer.iteration,
        "train_time_s": trainer.elapsed,
        "config": asdict(cfg),
        **compaction_summary(trainer.model, trainer.groups, trainer.data["image"][:8], cfg.image_size),
    }


def build_parser() -> ArgumentParser:
    d = MetaConfig()
    p = ArgumentParser(prog="python -m l2sparse.meta_train", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--dataset", default=d.dataset, help="dataset name (default: %(default)s)")
    add("--split", default=d.split, help="split whose seen tasks are meta-trained (default: %(default)s)")
    add("--data-root", default=None, help="dataset folder (real datasets only)")
    add("--tasks-dir", action="append", default=None, help="extra folder of task files (repeatable)")
    add("--model", default=d.model, help="registered model (default: %(default)s)")
    add("--backend", default=d.backend, help=f"inner loop: {', '.join(BACKENDS)} (default: %(default)s)")
    add("--order", default=d.order, help=f"{', '.join(ORDERS)} (default: %(default)s)")
    add("--inner-steps", type=int, default=d.inner_steps, help="K inner steps (default: %(default)s)")
    add("--inner-lr", type=float, default=d.inner_lr, help="inner step size α (default: %(default)s)")
    add("--truncate", type=int, default=d.truncate, help="exact last steps in truncated mode (default: %(default)s)")
    add("--outer-lr", type=float, default=d.outer_lr, help="Adam lr of the meta-init (default: %(default)s)")
    add("--lam-lr", type=float, default=d.lam_lr, help="Adam lr of ρ = log λ (default: %(default)s)")
    add("--lam-init", type=float, default=d.lam_init, help="initial λ (default: %(default)s)")
    add("--fixed-lambda", dest="learn_lambda", action="store_false", help="keep λ at --lam-init (0 allowed)")
    add("--per-layer", action="store_true", help="one λ per backbone layer")
    add("--budget", type=float, default=None, help="target group sparsity in [0, 1] of the meta-init (optional)")
    add("--budget-macs", type=float, default=None, help="target fraction in [0, 1] of the backbone's dense MACs")
    add(
        "--budget-ramp",
        type=float,
        default=d.budget_ramp,
        help="fraction of meta-iters over which the budget's target is approached (default: %(default)s)",
    )
    add("--meta-iters", type=int, default=d.meta_iters, help="meta-iterations (default: %(default)s)")
    add("--meta-batch", type=int, default=d.meta_batch, help="episodes per meta-iteration (default: %(default)s)")
    add("--support", type=int, default=d.support, help="support images per episode (default: %(default)s)")
    add("--query", type=int, default=d.query, help="query images per episode (default: %(default)s)")
    add("--subset", default=d.subset, help="'all' (any non-empty task subset) or a task count (default: all)")
    add("--group-mode", default=d.group_mode, help="'in' or 'out' channel groups (default: %(default)s)")
    add("--image-size", type=int, default=d.image_size, help="square image side (default: %(default)s)")
    add("--train-size", type=int, default=d.train_size, help="meta-train images (default: %(default)s)")
    add("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    add("--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)")
    add("--ckpt-every", type=int, default=d.ckpt_every, help="checkpoint interval (default: %(default)s)")
    add("--out", required=True, help="output folder")
    add("--resume", action="store_true", help="continue the run saved in --out")
    add("--quiet", action="store_true", help="no progress bar")
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
    own = ("out", "resume", "quiet", "dist_timeout")
    cfg = MetaConfig(**{k: v for k, v in vars(args).items() if k not in own})
    try:
        cfg.validate()  # before joining the process group: a bad option stops every rank alike, at once
        distributed.setup(cfg.device, args.dist_timeout)
        trainer = MetaSparsity(cfg, args.out, resume=args.resume)
        trainer.train(progress=not args.quiet)
    except UserError as e:
        fail(parser.prog, e)
    if not trainer.world.main:
        distributed.teardown()
        return {}
    out = Path(args.out)
    rep = report(trainer)
    plot_trajectory(trainer.log, [g.layer for g in trainer.groups], out / "meta_trajectory.png")
    save_json(rep, out / "report.json")
    print(
        f"λ {cfg.lam_init:.3g} -> {rep['lambda_final']}, group sparsity {rep['sparsity']['group']:.3f}, "
        f"params {rep['params']['dense']} -> {rep['params']['compact']}"
    )
    print(f"report: {out / 'report.json'}, plot: {out / 'meta_trajectory.png'}")
    distributed.teardown()
    return rep


if __name__ == "__main__":
    record(main)()

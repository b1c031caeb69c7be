"""Learned λ against the grid it replaces: the "Less is More" search and meta-sparsity runs, side by side.

    python benchmarks/lambda_search.py                                  # synthetic-default, tiny, 32 px
    python benchmarks/lambda_search.py --dataset celeba --data-root ../shared/data/celeba_hq_64 --split celeba-faces

Grid side: the fixed-λ trainer (``ProxAdam``, lr 1e-3, the seen tasks' mean loss) for every λ of a log grid and
``--trials`` seeds each; per λ the mean validation loss (mean ± std over trials) and group sparsity; the grid's best
λ is the one with the lowest mean validation loss. Meta side: for each λ₀ of ``--lam-init``, one meta-sparsity run
on the same images (λ learned from λ₀, no budget), then the fixed-λ trainer at the learned λ with the same trials, so
both λ are judged by the same validation loss. The default λ₀ are 0.1, inside the grid's good region, and 1, far
outside it: a run that learns nothing would stay at 1 and fail. λ means the same on both sides: both average the
task losses and both measure λ relative to each layer's gradient scale (``l2sparse.sparsity.adam_prox_``). Wall
times: the grid's total, and the meta run's (the search) next to the evaluation trials. The test split is never
used.

The defaults (4000 training images, 1500 steps) let every trial converge before it is judged. With 1000 images and
600 steps the depth loss was still falling steeply at the last step and the binary tasks began to overfit soon
after, so the validation loss of a trial said more about where its trajectory happened to be than about λ
(docs/benchmarks.md, "Learned λ against the grid it replaces").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from l2sparse.meta.metasparsity import MetaConfig, MetaSparsity
from l2sparse.sparsity import sparsity_report
from l2sparse.train import TrainConfig, train


def fixed(args: argparse.Namespace, lam: float, seed: int, out: Path) -> dict:
    cfg = TrainConfig(
        dataset=args.dataset,
        split=args.split,
        data_root=args.data_root,
        model=args.model,
        lam=lam,
        optimizer="adam",
        lr=1e-3,
        steps=args.steps,
        image_size=args.image_size,
        train_size=args.train_size,
        test_size=args.val_size,
        eval_split="val",
        seed=seed,
        device="cpu",
    )
    rep = train(cfg, out, progress=False).report
    return {
        "val_loss": statistics.fmean(m["loss"] for m in rep["metrics"].values()),
        "sparsity": rep["sparsity"]["group"],
    }


def trials(args: argparse.Namespace, lam: float, work: Path) -> tuple[list[dict], float]:
    started = time.perf_counter()
    runs = [fixed(args, lam, seed, work / f"lam{lam:g}-seed{seed}") for seed in range(args.trials)]
    return runs, time.perf_counter() - started


def row(name: str, lam: float, runs: list[dict], seconds: float) -> str:
    loss = [r["val_loss"] for r in runs]
    sparsity = statistics.fmean(r["sparsity"] for r in runs)
    return (
        f"{name:>9} {lam:9.4f} {statistics.fmean(loss):8.4f} ± {statistics.stdev(loss):6.4f} "
        f"{sparsity:9.1%} {seconds:8.1f}"
    )


def main(argv: list[str] | None = None) -> dict:
    """Run both sides, print the table; returns the per-λ trials, the grid's best λ, the grid's wall time (seconds)
    and one [`search`][] per λ₀ of ``--lam-init``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--split", default="synthetic-default")
    p.add_argument("--data-root", default=None)
    p.add_argument("--model", default="tiny")
    p.add_argument("--grid", default="0.01,0.03,0.1,0.3,1")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=1500, help="fixed-λ steps per trial")
    p.add_argument("--meta-iters", type=int, default=300)
    p.add_argument("--lam-init", default="0.1,1", help="comma-separated λ₀: one meta-sparsity run from each")
    p.add_argument("--inner-threshold", default="relative", help="meta-sparsity's --inner-threshold")
    p.add_argument("--init-horizon", type=float, default=100.0, help="meta-sparsity's --init-horizon (0: off)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--val-size", type=int, default=500)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    grid = [float(v) for v in args.grid.split(",")]
    lam_inits = [float(v) for v in args.lam_init.split(",")]
    with tempfile.TemporaryDirectory(prefix="l2sparse-lambda-search-") as tmp:  # the runs' folders, removed after
        return compare(args, grid, lam_inits, Path(tmp))


def compare(args: argparse.Namespace, grid: list[float], lam_inits: list[float], work: Path) -> dict:
    """Run the grid and the searches under ``work``, print the table and return the results."""
    lines, results, grid_seconds = [], {}, 0.0
    for lam in grid:
        runs, seconds = trials(args, lam, work)
        results[lam], grid_seconds = runs, grid_seconds + seconds
        lines.append(row("grid", lam, runs, seconds))
    best = min(grid, key=lambda lam: statistics.fmean(r["val_loss"] for r in results[lam]))

    best_loss = [r["val_loss"] for r in results[best]]
    searches = [search(args, lam_init, grid_seconds, work / f"search-{lam_init:g}") for lam_init in lam_inits]
    print(f"data {args.dataset}/{args.split}, model {args.model}, {args.image_size} px, {args.trials} trials per λ, "
          f"inner threshold {args.inner_threshold}, init horizon {args.init_horizon:g}")  # fmt: skip
    print(f"{'':>9} {'λ':>9} {'val loss (mean ± std)':>21} {'sparsity':>9} {'seconds':>8}")
    print("\n".join(lines))
    print(row("grid best", best, results[best], 0.0))
    for found in searches:
        print(row("learned", found["learned"], found["runs"], found["eval_seconds"]))
    for found in searches:
        gap = (statistics.fmean(r["val_loss"] for r in found["runs"]) - statistics.fmean(best_loss)) / statistics.stdev(
            best_loss
        )
        seconds = found["search_seconds"]
        print(f"meta-sparsity run: λ {found['lam_init']:g} -> {found['learned']:.4f} in {seconds:.1f} s "
              f"(meta-init group sparsity {found['meta_sparsity']:.1%}); validation loss gap to the grid best "
              f"{gap:+.2f} std of its trials (target ≤ 1); compute: meta run / grid = {seconds:.1f} / "
              f"{grid_seconds:.1f} s = {seconds / grid_seconds:.2f} (target ≤ 0.33), with the learned λ's "
              f"evaluation trials {(seconds + found['eval_seconds']) / grid_seconds:.2f}")  # fmt: skip
    return {"grid": results, "best": best, "grid_seconds": grid_seconds, "searches": searches}


def search(args: argparse.Namespace, lam_init: float, grid_seconds: float, work: Path) -> dict:
    """One meta-sparsity run from ``lam_init`` on the grid's images, then the fixed-λ trials at the λ it learned:
    λ₀, the learned λ, the trials, the meta-init's group sparsity and the seconds of the run and of the trials."""
    started = time.perf_counter()
    meta = MetaSparsity(
        MetaConfig(
            dataset=args.dataset,
            split=args.split,
            data_root=args.data_root,
            model=args.model,
            lam_init=lam_init,
            inner_threshold=args.inner_threshold,
            init_horizon=args.init_horizon,
            meta_iters=args.meta_iters,
            image_size=args.image_size,
            train_size=args.train_size,
            device="cpu",
        ),
        work / "meta",
    )
    meta.train(progress=False)
    search_seconds = time.perf_counter() - started
    learned = float(meta.lam.detach())
    runs, eval_seconds = trials(args, learned, work)  # in the search's own folder, apart from the grid's
    return {
        "lam_init": lam_init,
        "learned": learned,
        "runs": runs,
        "meta_sparsity": sparsity_report(meta.model, meta.groups)["group"],
        "search_seconds": search_seconds,
        "eval_seconds": eval_seconds,
    }


if __name__ == "__main__":
    main()

"""Fixed-λ multi-task training with group sparsity (the "Less is More" baseline).

``python -m l2sparse.train --dataset synthetic --lam 1e-3 --steps 300 --out runs/x``

The shared backbone's channel groups are shrunk by the group prox after every optimiser step (``ProxAdam`` or
``ProxSGD``); heads are not penalised. At the end the model is evaluated on the held-out split, compacted, and
``report.json`` is written next to an atomic ``checkpoint.pt`` (``--resume`` continues an interrupted run on the
same trajectory).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from l2sparse import options
from l2sparse.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    save_json,
    strict_json,
)
from l2sparse.cli import ArgumentParser, fail, require_positive
from l2sparse.data import get_dataset, make_dataset, require_root
from l2sparse.device import DEVICES, resolve_device
from l2sparse.engine import Loop, fit
from l2sparse.errors import CheckpointError, ConfigError, UserError
from l2sparse.guards import check_finite_model, check_numbers
from l2sparse.models import MultiTaskModel, check_model, create_model
from l2sparse.options import DataOptions, option
from l2sparse.runs import RunFolder
from l2sparse.sparsity import ProxAdam, ProxSGD, channel_groups, compact, max_output_difference, sparsity_report
from l2sparse.sparsity.report import count_macs, count_params
from l2sparse.tasks import Task, load_registry
from l2sparse.weighting import WEIGHTINGS

OPTIMIZERS = {"sgd": ProxSGD, "adam": ProxAdam}
RESUMABLE_CHANGES = ("steps", "ckpt_every", "device")  # options that do not change the trajectory so far
BLOW_UP_FIX = "lower the learning rate (train's --lr) or check the data and the task losses"


@dataclass
class TrainConfig(DataOptions):
    """Everything that defines a fixed-λ run (saved in the checkpoint and the report)."""

    tasks: list[str] | None = option(None, "comma-separated task names (default: all of <dataset>-default)")
    split: str | None = option(None, "train on this split's seen tasks (when --tasks is not given)")
    attach: dict[str, str] | None = option(None, cli=False)
    lam: float = option(1e-3, "group-sparsity strength λ ≥ 0")
    steps: int = option(300, "optimiser steps")
    lr: float = option(0.05, "learning rate, also the prox step α")
    optimizer: str = option("sgd", f"{' or '.join(OPTIMIZERS)}")
    weighting: str = option("equal", f"{' or '.join(WEIGHTINGS)}")
    batch_size: int = option(16, "images per step")
    image_size: int = option(64)
    train_size: int = option(1000)
    test_size: int = option(200, "held-out images")
    eval_split: str = option("test", "val or test: where metrics are taken")
    group_mode: str = option("in", "'in' or 'out' channel groups")
    seed: int = option(0, "random seed")
    ckpt_every: int = option(100, "checkpoint interval")

    def validate(self) -> list[Task]:
        """Check every option; returns the resolved tasks. Raises ``ConfigError`` naming the option.

        Tasks: ``tasks`` if given, else the seen tasks of ``split``, else every task of ``<dataset>-default``.
        """
        check_numbers(self)
        require_root(self.dataset, self.data_root)
        reg = load_registry(self.tasks_dir)
        if self.tasks is not None and not all(self.tasks):
            raise ConfigError(f"tasks: expected comma-separated task names, got {','.join(self.tasks)!r}")
        if self.tasks is not None and self.split is not None:
            raise ConfigError("tasks / split: give the tasks or a split whose seen tasks to train, not both")
        if self.tasks is not None:
            tasks = reg.get(self.dataset, self.tasks)
        elif self.split is not None:
            tasks = reg.seen(reg.split_of(self.split, self.dataset).name)
        else:
            default = reg.split(f"{self.dataset}-default")
            tasks = reg.get(self.dataset, (*default.seen, *default.unseen))
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ConfigError(f"data-root: {self.data_root} is not a folder")
        check_model(self.model)
        if not self.lam >= 0:
            raise ConfigError(f"lam: expected λ ≥ 0, got {self.lam}")
        require_positive(self, ("steps", "batch_size", "image_size", "train_size", "test_size", "ckpt_every"))
        if not self.lr > 0:
            raise ConfigError(f"lr: expected a positive learning rate, got {self.lr}")
        for name, valid in (
            ("eval_split", ("val", "test")),
            ("optimizer", OPTIMIZERS),
            ("weighting", WEIGHTINGS),
            ("group_mode", ("in", "out")),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"{name.replace('_', '-')}: expected one of {', '.join(valid)}, got {getattr(self, name)!r}"
                )
        return tasks


def task_losses(model: MultiTaskModel, tasks: Sequence[Task], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-task losses of ``model`` on a batch ``{"image": (B, 3, H, W), <target>: ...}``."""
    preds = model(batch["image"], [t.name for t in tasks])
    return {t.name: t.loss_fn(preds[t.name], t.target_of(batch)) for t in tasks}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel, tasks: Sequence[Task], data: dict[str, Tensor], batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Metrics of every task over a whole split ``{key: (N, ...)}`` in eval mode, plus its mean loss ``loss``."""
    was_training = model.training
    model.eval()
    meters = {t.name: t.new_meter() for t in tasks}
    loss_sums = dict.fromkeys(meters, 0.0)
    n = len(data["image"])
    for i in range(0, n, batch_size):
        batch = {k: v[i : i + batch_size] for k, v in data.items()}
        preds = model(batch["image"], [t.name for t in tasks])
        for t in tasks:
            target = t.target_of(batch)
            loss_sums[t.name] += t.loss_fn(preds[t.name], target).item() * len(batch["image"])
            meters[t.name].update(preds[t.name], target)
    model.train(was_training)
    return {name: {**m.compute(), "loss": loss_sums[name] / n} for name, m in meters.items()}


def load_split(
    cfg: TrainConfig, tasks: Sequence[Task], split: str, size: int, device: torch.device, progress: bool = False
) -> dict[str, Tensor]:
    """A split of the configured dataset, stacked and moved to ``device``: ``{key: (N, ...)}``."""
    targets = {t.target for t in tasks}
    ds = make_dataset(cfg.dataset, split, cfg.data_root, cfg.image_size, size, cfg.seed, targets)
    bar = (lambda it: tqdm(it, desc=f"load {split}", leave=False)) if progress else None
    return {k: v.to(device) for k, v in ds.tensors(bar).items() if k == "image" or k in targets}


def compaction_summary(model: MultiTaskModel, groups, probe: Tensor, image_size: int) -> dict:
    """Sparsity report plus dense vs compact parameter and MAC counts; checks the compact model's outputs."""
    size = (3, image_size, image_size)
    small = compact(model).eval()
    model.eval()
    report = sparsity_report(model, groups)
    return {
        "sparsity": {k: report[k] for k in ("group", "param", "per_layer")},
        "params": {
            "dense": count_params(model),
            "compact": count_params(small),
            "backbone_dense": count_params(model.backbone),
            "backbone_compact": count_params(small.backbone),
        },
        "macs": {"dense": count_macs(model, size), "compact": count_macs(small, size)},
        "compaction": {"max_abs_diff": max_output_difference(model, small, probe)},
    }


@dataclass
class Trained:
    """A finished fixed-λ run: its model (in eval mode, on the run's device) and its report (``report.json``)."""

    model: MultiTaskModel
    report: dict


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Trained:
    """Run fixed-λ training; writes ``out/checkpoint.pt`` and ``out/report.json`` and returns the trained model
    with its report.

    Raises:
        ConfigError: a bad option, or an ``out`` folder that cannot be written or already holds a run (without
            ``resume``).
        BlowUpError: a loss or weight that became NaN or infinite (naming the step).
        CheckpointError: ``resume`` with a missing, corrupt or mismatching checkpoint.
    """
    tasks = cfg.validate()
    folder = RunFolder(Path(out))
    out, ckpt_path = folder.path, folder.checkpoint
    state = folder.start(resume, asdict(cfg), ("model", "optimizer", "weighting", "step", "rng"), RESUMABLE_CHANGES)
    device = resolve_device(cfg.device)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, tasks, attach=cfg.attach).to(device)
    weighting = WEIGHTINGS[cfg.weighting]([t.name for t in tasks]).to(device)
    groups = channel_groups(model, "backbone", cfg.group_mode)
    params = [*model.parameters(), *weighting.parameters()]
    kwargs = {"momentum": 0.9} if cfg.optimizer == "sgd" else {}
    opt = OPTIMIZERS[cfg.optimizer](model, groups, lam=cfg.lam, lr=cfg.lr, params=params, **kwargs)
    rng = torch.Generator().manual_seed(cfg.seed)
    step, last_loss, elapsed = 0, float("nan"), 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            weighting.load_state_dict(state["weighting"])
            opt.load_state_dict(state["optimizer"])
            rng.set_state(state["rng"])
            step = int(state["step"])
            last_loss, elapsed = float(state["last_loss"]), float(state["elapsed_s"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt_path}: its contents do not fit this run ({type(e).__name__}: {e})") from e

    train_data = load_split(cfg, tasks, "train", cfg.train_size, device, progress)
    test_data = load_split(cfg, tasks, cfg.eval_split, cfg.test_size, device, progress)
    n_train = len(train_data["image"])

    def checkpoint() -> None:
        check_finite_model("train", step, model, BLOW_UP_FIX, ckpt_path)
        out.mkdir(parents=True, exist_ok=True)  # created at the first checkpoint: an early error leaves nothing
        save_checkpoint(
            {
                "config": asdict(cfg),
                "model": model.state_dict(),
                "weighting": weighting.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "rng": rng.get_state(),
                "last_loss": last_loss,
                "elapsed_s": elapsed + time.perf_counter() - start,
            },
            ckpt_path,
        )

    def loss_of(idx: Tensor) -> Tensor:
        return weighting(task_losses(model, tasks, {k: v[idx] for k, v in train_data.items()}))

    def track(done: int, loss: Tensor) -> None:
        nonlocal step, last_loss
        step, last_loss = done, loss.item()
        bar.update(1)
        if step % 25 == 0 or step == cfg.steps:
            bar.set_postfix(loss=f"{last_loss:.3f}", group_sparsity=f"{sparsity_report(model, groups)['group']:.2f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()

    start = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    loop = Loop(n_train, cfg.batch_size, rng, device, "train", BLOW_UP_FIX, ckpt_path)
    fit(opt, loss_of, loop, cfg.steps, start=step, hooks=[track])
    bar.close()

    report = {
        "dataset": cfg.dataset,
        "synthetic_data": get_dataset(cfg.dataset).synthetic,
        "train_images": n_train,
        "test_images": len(test_data["image"]),
        "model": cfg.model,
        "tasks": [t.name for t in tasks],
        "lambda": cfg.lam,
        "config": asdict(cfg),
        "train_loss_final": last_loss,
        "train_time_s": elapsed + time.perf_counter() - start,
        **compaction_summary(model, groups, test_data["image"][:8], cfg.image_size),
        "metrics": evaluate(model, tasks, test_data),
    }
    save_json(report, folder.report)
    return Trained(model.eval(), report)


def train_or_reuse(cfg: TrainConfig, out: str | Path, progress: bool = True) -> Trained:
    """The run in ``out``: read when that run finished with exactly ``cfg``, else trained (resumed from its
    checkpoint, which refuses a checkpoint saved with other options). The folder is locked meanwhile
    ([`locked`][l2sparse.checkpoint.locked]): a second process asking for the same run waits and reuses it."""
    with RunFolder(Path(out)).locked() as folder:
        report = folder.finished(asdict(cfg))
        if report is None:
            return train(cfg, folder.path, resume=folder.checkpoint.exists(), progress=progress)
        model = create_model(cfg.model, cfg.validate(), attach=cfg.attach)
        model.load_state_dict(load_checkpoint(folder.checkpoint, ("model",))["model"])
        return Trained(model.to(resolve_device(cfg.device)).eval(), report)


def build_parser() -> ArgumentParser:
    return options.parser_for(TrainConfig, "python -m l2sparse.train", __doc__.split("\n\n")[0], resume=True)


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


if __name__ == "__main__":
    main()

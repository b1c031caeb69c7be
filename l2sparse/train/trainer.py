"""Fixed-λ training: the group prox after every optimiser step, then evaluation, compaction and the report."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import Tensor
from tqdm import tqdm

from l2sparse.checkpoint import load_checkpoint, save_checkpoint, save_json
from l2sparse.data import get_dataset
from l2sparse.data.splits import load_split
from l2sparse.device import resolve_device
from l2sparse.engine import Loop, evaluate, fit, task_losses
from l2sparse.errors import CheckpointError
from l2sparse.guards import check_finite_model
from l2sparse.models import MultiTaskModel, create_model
from l2sparse.runs import RunFolder
from l2sparse.sparsity import SizeReport, channel_groups, compaction_summary, sparsity_report
from l2sparse.tasks import task_files_digest
from l2sparse.train.config import BLOW_UP_FIX, OPTIMIZERS, RESUMABLE_CHANGES, TrainConfig
from l2sparse.weighting import WEIGHTINGS


class TrainReport(SizeReport, TypedDict("_Lambda", {"lambda": float})):
    """``report.json`` of a fixed-λ run (``lambda``: the run's λ)."""

    dataset: str
    synthetic_data: bool
    train_images: int
    test_images: int
    model: str
    tasks: list[str]
    config: dict[str, Any]
    task_files: str  # digest of the task and split files read (tasks.task_files_digest)
    train_loss_final: float
    train_time_s: float
    metrics: dict[str, dict[str, float]]  # task -> metric -> value on the held-out split, and its mean loss


@dataclass
class Trained:
    """A finished fixed-λ run: its model (in eval mode, on the run's device) and its report (``report.json``)."""

    model: MultiTaskModel
    report: TrainReport


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
    task_files = task_files_digest(cfg.tasks_dir)
    keys = ("model", "optimizer", "weighting", "step", "rng")
    state = folder.start(resume, asdict(cfg), keys, RESUMABLE_CHANGES, task_files)
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

    train_data = load_split(cfg, "train", cfg.train_size, tasks, device, cfg.seed, progress)
    test_data = load_split(cfg, cfg.eval_split, cfg.test_size, tasks, device, cfg.seed, progress)
    n_train = len(train_data["image"])

    def checkpoint() -> None:
        check_finite_model("train", step, model, BLOW_UP_FIX, ckpt_path)
        out.mkdir(parents=True, exist_ok=True)  # created at the first checkpoint: an early error leaves nothing
        save_checkpoint(
            {
                "config": asdict(cfg),
                "task_files": task_files,
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

    report: TrainReport = {
        "dataset": cfg.dataset,
        "synthetic_data": get_dataset(cfg.dataset).synthetic,
        "train_images": n_train,
        "test_images": len(test_data["image"]),
        "model": cfg.model,
        "tasks": [t.name for t in tasks],
        "lambda": cfg.lam,
        "config": asdict(cfg),
        "task_files": task_files,
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
        report = folder.finished(asdict(cfg), task_files_digest(cfg.tasks_dir))
        state = load_checkpoint(folder.checkpoint, ("config", "model", "step")) if report is not None else None
        if state is None or state["config"] != asdict(cfg) or state["step"] != cfg.steps:  # no report, or not its
            return train(cfg, folder.path, resume=folder.checkpoint.exists(), progress=progress)
        model = create_model(cfg.model, cfg.validate(), attach=cfg.attach)
        model.load_state_dict(state["model"])
        return Trained(model.to(resolve_device(cfg.device)).eval(), report)

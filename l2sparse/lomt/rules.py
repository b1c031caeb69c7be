"""Attachment rules by ``--rule`` name: where a task's head attaches, from its activity or from probes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from l2sparse.data.splits import load_split
from l2sparse.device import resolve_device
from l2sparse.engine import Loop, fit, task_losses
from l2sparse.lomt.activity import deepest_active, earliest_within
from l2sparse.models import MODELS, MultiTaskModel, backbone_state, create_model
from l2sparse.tasks import Task
from l2sparse.train import train_or_reuse

if TYPE_CHECKING:
    from l2sparse.lomt.config import LomtConfig


@dataclass(frozen=True)
class RuleInput:
    """What an attachment rule may look at for one task: the run's config, the task, the backbone's layers in
    forward order, which of them its sparse runs keep active, and the output folder and progress flag (for rules
    that train)."""

    cfg: LomtConfig
    task: Task
    layers: Sequence[str]
    active: Mapping[str, bool]
    out: Path
    progress: bool


def deepest_active_rule(x: RuleInput) -> tuple[str, dict[str, float] | None]:
    return deepest_active(x.active, x.layers), None


def probe_rule(x: RuleInput) -> tuple[str, dict[str, float] | None]:
    losses = probe_losses(x.cfg, x.task, x.out, x.progress)
    return earliest_within(losses, x.layers, x.cfg.epsilon), losses


# attachment rules by ``--rule`` name: ``rule(RuleInput) -> (layer, probe losses per layer or None)``
RULES: dict[str, Callable[[RuleInput], tuple[str, dict[str, float] | None]]] = {
    "deepest-active": deepest_active_rule,
    "probe": probe_rule,
}


PROBE_LR, PROBE_BATCH = 1e-3, 16  # the probe heads' Adam learning rate and batch


def head_loss(model: MultiTaskModel, task: Task, data: Mapping[str, Tensor], idx: Tensor) -> Tensor:
    """``task``'s loss on the images ``data["image"][idx]``."""
    return task_losses(model, [task], {k: v[idx] for k, v in data.items()})[task.name]


def probe_losses(cfg: LomtConfig, task: Task, out: Path, progress: bool) -> dict[str, float]:
    """Validation loss of a head trained at each layer on the frozen backbone of a dense single-task run."""
    dense = cfg.train_config([task], lam=0.0, steps=cfg.sparse_steps, eval_split="val")
    state = train_or_reuse(dense, out / "probe" / task.name / "dense", progress).model.state_dict()
    device = resolve_device(cfg.device)
    data = load_split(dense, "train", cfg.train_size, [task], device, dense.seed)
    val = load_split(dense, "val", cfg.test_size, [task], device, dense.seed)
    losses = {}
    for layer in MODELS[cfg.model].backbone().layer_names:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, [task], attach={task.name: layer}).to(device)
        model.backbone.load_state_dict(backbone_state(state))
        model.backbone.requires_grad_(False)
        model.backbone.eval()
        opt = torch.optim.Adam(model.heads.parameters(), lr=PROBE_LR)
        what, fix = f"lomt probe ({task.name}, {layer})", "check the task's loss and targets"
        loop = Loop(len(data["image"]), PROBE_BATCH, torch.Generator().manual_seed(cfg.seed), device, what, fix)
        fit(opt, partial(head_loss, model, task, data), loop, cfg.probe_steps)
        with torch.no_grad():
            model.eval()
            losses[layer] = task_losses(model, [task], val)[task.name].item()
    return losses

"""The minibatch loop every trainer runs (draw indices, compute a loss, stop at a blow-up, step, call hooks), and
the per-task losses and metrics it and every report use.

``train``, ``adapt``'s fine-tuning and LOMT's probes differ only in what the loss is and what happens after a
step (the prox lives in the optimiser; zero-group masks, checkpoints, progress bars and learning curves are
hooks), so they share this loop. Meta-training's outer loop steps on episodes instead and has its own.

One batch format everywhere: ``{"image": (B, 3, H, W), <task name>: that task's target}``, the target already
selected, class-merged and transformed ([`task_view`][l2sparse.data.splits.task_view]); episodes, splits and
adaptation shots all have it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from l2sparse.guards import check_finite
from l2sparse.models import MultiTaskModel
from l2sparse.tasks import Task

Hook = Callable[[int, Tensor], None]


@dataclass(frozen=True)
class Loop:
    """How to draw batches and how to name a blow-up.

    Attributes:
        n: images to draw from; each step draws ``batch_size`` indices in ``0..n-1`` with replacement.
        batch_size: indices per step.
        generator: the generator the indices come from (its state is the loop's position in the data).
        device: where the indices go.
        what: the name a blow-up is reported under (``"train"``, ``"adapt (depth, seed 0)"``).
        fix: the option to change, in a blow-up's message.
        checkpoint: the last good checkpoint a blow-up's message points at, for runs that write one.
    """

    n: int
    batch_size: int
    generator: torch.Generator
    device: torch.device
    what: str
    fix: str
    checkpoint: Path | None = None


def fit(
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[Tensor], Tensor],
    loop: Loop,
    steps: int,
    start: int = 0,
    hooks: Sequence[Hook] = (),
) -> Tensor | None:
    """Steps ``start + 1 .. steps``: indices ``(batch_size,)``, ``loss_of(indices)`` (a scalar), a
    [`BlowUpError`][l2sparse.errors.BlowUpError] if it is not finite, backward, ``optimizer.step()`` (which
    applies the prox for a proximal optimiser), then every ``hook(step, loss)`` in order. Returns the last loss
    (``None`` when no step was left)."""
    loss = None
    for step in range(start + 1, steps + 1):
        idx = torch.randint(loop.n, (loop.batch_size,), generator=loop.generator).to(loop.device)
        loss = loss_of(idx)
        check_finite(loop.what, step, {"loss": loss}, loop.fix, loop.checkpoint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for hook in hooks:
            hook(step, loss)
    return loss


def task_losses(model: MultiTaskModel, tasks: Sequence[Task], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-task losses of ``model`` on a batch ``{"image": (B, 3, H, W), <task name>: target}``."""
    preds = model(batch["image"], [t.name for t in tasks])
    return {t.name: t.loss_fn(preds[t.name], batch[t.name]) for t in tasks}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel, tasks: Sequence[Task], data: Mapping[str, Tensor], batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Metrics of every task over a whole split ``{"image": (N, 3, H, W), <task name>: (N, ...)}`` in eval mode,
    plus its mean loss ``loss``."""
    was_training = model.training
    model.eval()
    meters = {t.name: t.new_meter() for t in tasks}
    loss_sums = dict.fromkeys(meters, 0.0)
    n = len(data["image"])
    for i in range(0, n, batch_size):
        images = data["image"][i : i + batch_size]
        preds = model(images, [t.name for t in tasks])
        for t in tasks:
            target = data[t.name][i : i + batch_size]
            loss_sums[t.name] += t.loss_fn(preds[t.name], target).item() * len(images)
            meters[t.name].update(preds[t.name], target)
    model.train(was_training)
    return {name: {**m.compute(), "loss": loss_sums[name] / n} for name, m in meters.items()}

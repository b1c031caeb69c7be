"""One fine-tuning job: a fresh head on a backbone init, the whole model trained on a task's shots with the init's
zero groups held at zero, then measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from l2sparse.adapt.config import AdaptConfig
from l2sparse.data import get_dataset, make_dataset
from l2sparse.data.episodes import MetaTestSampler
from l2sparse.engine import Loop, evaluate, fit
from l2sparse.latency import latency_ms
from l2sparse.models import create_model
from l2sparse.sparsity import channel_groups, compact, count_macs, count_params
from l2sparse.sparsity.groups import ConvGroups, group_matrix
from l2sparse.tasks import Task


def zero_group_masks(model: nn.Module, groups: Sequence[ConvGroups]) -> dict[str, Tensor]:
    """``{parameter name: 0/1 mask}`` that keeps every group that is exactly zero now at zero."""
    params = dict(model.named_parameters())
    masks = {}
    for g in groups:
        dead = (group_matrix(params, g) == 0).all(dim=1)
        if not dead.any():
            continue
        w = params[g.weight]
        shape = [1] * w.ndim
        shape[g.dim] = -1
        masks[g.weight] = (~dead).to(w.dtype).view(shape).expand_as(w).clone()
        for e in g.extras:
            masks[e] = (~dead).to(w.dtype)
    return masks


def fresh_model(
    cfg: AdaptConfig, backbone: Mapping[str, Tensor], task: Task, seed: int, device: torch.device
) -> nn.Module:
    """A model for ``task`` with a head initialised from ``seed`` on the init ``backbone``, in train mode."""
    torch.manual_seed(seed)
    model = create_model(cfg.model, [task]).to(device)
    model.backbone.load_state_dict(backbone)
    return model.train()


def adapt_task(
    cfg: AdaptConfig,
    backbone: Mapping[str, Tensor],
    task: Task,
    episode: Mapping,
    seed: int,
    device: torch.device,
) -> tuple[nn.Module, dict[str, float], list[tuple[int, float]]]:
    """Fine-tune a fresh head (and the backbone, zero groups held at zero) on ``episode["train"]``.

    Returns the adapted model, its test metrics and the primary metric every ``eval_every`` steps (and after the
    last step, whose evaluation gives the test metrics).
    """
    model = fresh_model(cfg, backbone, task, seed, device)
    groups = channel_groups(model)
    masks = {n: m.to(device) for n, m in zero_group_masks(model, groups).items()}
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    train_b, test_b = episode["train"], episode["test"]
    n = len(train_b["image"])
    loop = Loop(
        n,
        min(cfg.batch_size, n),
        torch.Generator().manual_seed(seed),
        device,
        f"adapt ({task.name}, seed {seed})",
        "lower --lr",
    )
    curve, metrics = [], {}

    def loss_of(idx: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            pred = model(train_b["image"][idx])[task.name]
        return task.loss_fn(pred.float(), train_b[task.name][idx])

    @torch.no_grad()
    def keep_zero_groups(step: int, loss: Tensor) -> None:
        for name, mask in masks.items():
            params[name].mul_(mask)

    def learning_curve(step: int, loss: Tensor) -> None:
        nonlocal metrics
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = evaluate(model, [task], test_b)[task.name]
            curve.append((step, metrics[task.primary_metric]))

    fit(opt, loss_of, loop, cfg.steps, hooks=[keep_zero_groups, learning_curve])
    return model, metrics, curve


def meta_test_sampler(cfg: AdaptConfig, targets: Sequence[Task], device: torch.device) -> MetaTestSampler:
    """The tasks' training images (``adapt_size`` from the dataset's adaptation split) and test images
    (``test_size``), as ``run`` draws every init's shots from them, on ``device``."""
    needed = {t.target for t in targets}

    def load(split: str, size: int) -> dict[str, Tensor]:
        data = make_dataset(cfg.dataset, split, cfg.data_root, cfg.image_size, size, 0, needed)
        return {k: v.to(device) for k, v in data.tensors().items()}

    return MetaTestSampler(
        load(get_dataset(cfg.dataset).adapt_split, cfg.adapt_size), load("test", cfg.test_size), targets
    )


@torch.no_grad()
def try_task(cfg: AdaptConfig, task: Task, episode: Mapping, device: torch.device) -> None:
    """One loss of a fresh model on two of the task's training images, so that a target that does not fit the head
    or a loss that is not a scalar is an error naming the task file before any init is trained."""
    model = create_model(cfg.model, [task]).to(device).train()
    images = episode["train"]["image"][:2]
    task.loss_fn(model(images)[task.name], episode["train"][task.name][:2])


def adapt_job(
    cfg: AdaptConfig,
    backbone: Mapping[str, Tensor],
    task: Task,
    episode: Mapping,
    seed: int,
    device: torch.device,
    measure: bool,
) -> dict:
    """One fine-tuning job ([`adapt_task`][l2sparse.adapt.adapt_task]) on ``device``: ``{"metrics", "curve"}``, plus
    with ``measure`` the adapted model's ``"size"`` (params, MACs and latency, dense and compacted)."""
    return job_result(cfg, *adapt_task(cfg, backbone, task, episode, seed, device), device, measure)


def job_result(
    cfg: AdaptConfig,
    model: nn.Module,
    metrics: dict[str, float],
    curve: list[tuple[int, float]],
    device: torch.device,
    measure: bool,
) -> dict:
    """A finished job's entry: ``{"metrics", "curve"}``, plus with ``measure`` the adapted model's ``"size"``."""
    result: dict = {"metrics": metrics, "curve": curve}
    if measure:
        small = compact(model.eval())
        size = (3, cfg.image_size, cfg.image_size)
        result["size"] = {
            "params": {"dense": count_params(model), "compact": count_params(small)},
            "macs": {"dense": count_macs(model, size), "compact": count_macs(small, size)},
            "latency_ms": {
                "dense": latency_ms(model, cfg.image_size, device),
                "compact": latency_ms(small, cfg.image_size, device),
            },
        }
    return result

"""Several fine-tuning jobs of one task at once: the inits × seeds of a task stepped together through
``torch.func.vmap``.

Every job is set up exactly as [`adapt_task`][l2sparse.adapt.finetune.adapt_task] sets it up (the same head init
from its seed, the same backbone, the same zero-group masks, the same batch indices from its own generator); the
jobs' parameters and BatchNorm buffers are then stacked (``stack_module_state``), each step runs one ``vmap``-ed
forward and backward over all jobs (each job's gradient is that of its own loss) and one Adam over the stacked
tensors, which is Adam on each job, element by element. The results equal the sequential path's up to float
rounding (the batched convolutions sum in another order). It pays where a step is dominated by per-call overhead:
1.7× for twelve tiny jobs at 32 px on a 2-core CPU, 0.85× for four ``small`` ones at 64 px
(``benchmarks/adapt_batching.py``), hence ``--no-vectorise``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.finetune import fresh_model, zero_group_masks
from l2sparse.engine import evaluate
from l2sparse.guards import check_finite
from l2sparse.sparsity import channel_groups
from l2sparse.tasks import Task

Result = tuple[nn.Module, dict[str, float], list[tuple[int, float]]]


def _load(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], j: int) -> nn.Module:
    """``model`` with job ``j``'s slice of the stacked parameters and buffers."""
    model.load_state_dict({**{k: v[j] for k, v in params.items()}, **{k: v[j] for k, v in buffers.items()}})
    return model


def adapt_tasks_together(
    cfg: AdaptConfig,
    backbones: Sequence[Mapping[str, Tensor]],
    task: Task,
    episodes: Sequence[Mapping],
    seeds: Sequence[int],
    device: torch.device,
) -> list[Result]:
    """Fine-tune job ``j`` (init ``backbones[j]``, shots ``episodes[j]["train"]``, seed ``seeds[j]``) for every
    ``j`` at once; returns per job what [`adapt_task`][l2sparse.adapt.finetune.adapt_task] returns: the adapted
    model, its test metrics and its learning curve.

    Raises:
        BlowUpError: a job's loss that became NaN or infinite, naming the job's task and seed.
    """
    models = [fresh_model(cfg, b, task, s, device) for b, s in zip(backbones, seeds, strict=True)]
    masks = [zero_group_masks(m, channel_groups(m)) for m in models]
    params, buffers = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    stacked_masks = {
        name: torch.stack([m.get(name, torch.ones_like(params[name][0])) for m in masks])
        for name in {n for m in masks for n in m}
    }
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    base = copy.deepcopy(models[0]).to("meta")
    train = [e["train"] for e in episodes]
    n = [len(b["image"]) for b in train]
    batch = [min(cfg.batch_size, k) for k in n]
    generators = [torch.Generator().manual_seed(s) for s in seeds]

    def loss_of(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            pred = functional_call(base, (p, b), (x,))[task.name]
        return task.loss_fn(pred.float(), y)

    losses_of = vmap(loss_of)
    curves: list[list[tuple[int, float]]] = [[] for _ in models]
    metrics: list[dict[str, float]] = [{} for _ in models]
    for step in range(1, cfg.steps + 1):
        idx = [torch.randint(k, (bs,), generator=g).to(device) for k, bs, g in zip(n, batch, generators, strict=True)]
        x = torch.stack([b["image"][i] for b, i in zip(train, idx, strict=True)])
        y = torch.stack([b[task.name][i] for b, i in zip(train, idx, strict=True)])
        losses = losses_of(params, buffers, x, y)  # (J,)
        if not torch.isfinite(losses).all():  # name the first job that blew up
            for loss, seed in zip(losses, seeds, strict=True):
                check_finite(f"adapt ({task.name}, seed {seed})", step, {"loss": loss}, "lower --lr")
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        with torch.no_grad():
            for name, mask in stacked_masks.items():
                params[name].mul_(mask)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            for j, (model, episode) in enumerate(zip(models, episodes, strict=True)):
                metrics[j] = evaluate(_load(model, params, buffers, j), [task], episode["test"])[task.name]
                curves[j].append((step, metrics[j][task.primary_metric]))
    return list(zip(models, metrics, curves, strict=True))  # the last step's evaluation loaded each model's state

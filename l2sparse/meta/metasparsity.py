"""The meta-sparsity trainer: learn the shared initialisation and the group-sparsity strength λ together.

One meta-iteration (DESIGN §1):

1. sample a meta-batch of episodes over the split's seen tasks (task subset, support and disjoint query images);
2. per episode, a differentiable proximal inner loop from the meta-init (any backend);
3. outer loss = mean query loss (+ an optional budget term); backprop to the meta-init and ρ (λ = exp(ρ));
4. Adam step on the meta-init and ρ, then the group prox on the meta-init's backbone with the new λ, so the
   meta-init itself carries the learned sparsity. The prox step of each layer is Adam's step normalised by the
   layer's gradient RMS ([`adam_prox_steps`][]), so λ keeps the meaning it has after an SGD
   step. (A fixed step instead gives a cliff: past some λ the prox outruns Adam's normalised steps for every group
   and the meta-init collapses, whatever its gradients.)
   BatchNorm running statistics of the meta-init are then refreshed from the query images.

Checkpoints are atomic and hold model, ρ, optimiser, sampler state and the log, so ``resume`` continues on exactly
the trajectory of an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from l2sparse.checkpoint import CheckpointError, check_resumable, load_checkpoint, save_checkpoint
from l2sparse.cli import require_positive
from l2sparse.data import make_dataset, require_root
from l2sparse.data.episodes import EpisodeSampler
from l2sparse.device import DEVICES, resolve_device
from l2sparse.meta.backends import InnerLoop, get_backend
from l2sparse.meta.inner import InnerConfig
from l2sparse.models import check_model, create_model
from l2sparse.sparsity import ConvGroups, adam_prox_steps, channel_groups, prox_, sparsity_report
from l2sparse.sparsity.groups import group_matrix
from l2sparse.tasks import Task, load_registry

RESUMABLE_CHANGES = ("meta_iters", "ckpt_every", "device")


@dataclass
class MetaConfig:
    """Everything that defines a meta-sparsity run (saved in the checkpoint and the report)."""

    dataset: str = "synthetic"
    split: str = "synthetic-default"
    data_root: str | None = None
    tasks_dir: list[str] | None = None
    model: str = "tiny"
    backend: str = "torchfunc"
    order: str = "second_order"
    inner_steps: int = 3
    inner_lr: float = 0.05
    truncate: int = 1
    outer_lr: float = 1e-3
    lam_lr: float = 0.05
    lam_init: float = 0.05
    learn_lambda: bool = True
    per_layer: bool = False
    budget: float | None = None
    budget_weight: float = 1.0
    meta_iters: int = 200
    meta_batch: int = 2
    support: int = 8
    query: int = 8
    subset: str = "all"
    group_mode: str = "in"
    image_size: int = 32
    train_size: int = 500
    seed: int = 0
    device: str = "auto"
    ckpt_every: int = 50

    def inner(self) -> InnerConfig:
        return InnerConfig(self.inner_steps, self.inner_lr, self.order, self.truncate)

    def validate(self) -> list[Task]:
        """Check every option; returns the split's seen tasks. Raises ``ValueError`` naming the option."""
        require_root(self.dataset, self.data_root)
        self.inner()
        get_backend(self.backend)
        registry = load_registry(self.tasks_dir)
        registry.split_of(self.split, self.dataset)
        check_model(self.model)
        if self.learn_lambda and not self.lam_init > 0:
            raise ValueError(f"lam-init: λ = exp(ρ) must start > 0, got {self.lam_init}")
        if not self.lam_init >= 0:
            raise ValueError(f"lam-init: expected λ ≥ 0, got {self.lam_init}")
        if self.budget is not None and not 0 <= self.budget <= 1:
            raise ValueError(f"budget: a target group sparsity in [0, 1], got {self.budget}")
        require_positive(
            self, ("meta_iters", "meta_batch", "support", "query", "image_size", "train_size", "ckpt_every")
        )
        for name in ("outer_lr", "lam_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")
        if self.group_mode not in ("in", "out") or self.device not in DEVICES:
            raise ValueError(f"group-mode / device: expected in|out and one of {', '.join(DEVICES)}")
        if self.subset != "all" and not self.subset.isdigit():
            raise ValueError(f"subset: expected 'all' or a task count, got {self.subset!r}")
        return registry.seen(self.split)


def soft_group_sparsity(
    model: torch.nn.Module, groups: Sequence[ConvGroups], lam: Tensor, steps: Sequence[Tensor | float]
) -> Tensor:
    """A differentiable stand-in for the group sparsity the meta-init's prox produces: the mean over groups of
    ``sigmoid(3 · log(t_g / ‖W_g‖))`` with ``t_g = α_l · λ · √size`` and ``α_l`` the layer's prox step.

    The log ratio keeps a usable gradient however far the norms are from the threshold (a sigmoid of the difference
    saturates: with norms 10x the threshold its gradient is ~e^-90 and the budget does nothing). The norms are
    detached: the budget acts through λ only (its gradients on the weights would inflate Adam's second moments and
    so shrink the very prox step it relies on).
    """
    params = dict(model.named_parameters())
    lams = lam.expand(len(groups)) if lam.ndim == 0 else lam
    parts = []
    for g, lam_l, step in zip(groups, lams, steps, strict=True):
        thr = step * lam_l * g.group_size(params) ** 0.5
        norms = torch.linalg.vector_norm(group_matrix(params, g), dim=1).detach()
        parts.append(torch.sigmoid(3 * (thr.clamp_min(1e-12).log() - norms.clamp_min(1e-12).log())))
    return torch.cat(parts).mean()


def prox_steps(opt: torch.optim.Optimizer, model: torch.nn.Module, groups: Sequence[ConvGroups]) -> list:
    """The meta-init prox step per layer: the layer's RMS-normalised Adam step (or the plain lr)."""
    if isinstance(opt, torch.optim.Adam):
        return adam_prox_steps(opt, dict(model.named_parameters()), groups)
    return [opt.param_groups[0]["lr"]] * len(groups)


def meta_update(
    model: torch.nn.Module,
    groups: Sequence[ConvGroups],
    rho: Tensor,
    backend: InnerLoop,
    episodes: Sequence[dict],
    tasks: Sequence[Task],
    inner: InnerConfig,
    opt: torch.optim.Optimizer,
    budget: tuple[float, float] | None = None,
) -> dict:
    """One outer step on a meta-batch: mean query loss over episodes (each the mean over its tasks), plus
    ``weight · relu(target − soft sparsity)²`` when ``budget = (target, weight)``; an ``opt`` step on the meta-init
    and ``rho``; then the prox on the meta-init's groups with ``λ = exp(rho)`` and the layers' Adam prox steps.

    Returns ``{"lambda", "outer_loss", "query_loss": {task: mean over episodes}}``.
    """
    by_name = {t.name: t for t in tasks}
    opt.zero_grad(set_to_none=True)
    lam = rho.exp()
    per_task: dict[str, list[float]] = {}
    outer = torch.zeros((), device=rho.device)
    for ep in episodes:
        losses = backend.query_losses(model, groups, lam, ep, [by_name[n] for n in ep["tasks"]], inner)
        outer = outer + sum(losses.values()) / len(losses) / len(episodes)
        for n, v in losses.items():
            per_task.setdefault(n, []).append(v.item())
    if budget is not None:
        target, weight = budget
        soft = soft_group_sparsity(model, groups, lam, prox_steps(opt, model, groups))
        outer = outer + weight * torch.relu(target - soft) ** 2
    outer.backward()
    opt.step()
    with torch.no_grad():
        prox_(model, groups, rho.exp(), prox_steps(opt, model, groups))
    return {
        "lambda": rho.detach().exp().tolist(),
        "outer_loss": outer.item(),
        "query_loss": {n: sum(v) / len(v) for n, v in per_task.items()},
    }


class MetaSparsity:
    """Meta-train a multi-task model's init and λ on a split's seen tasks.

    Example:
        ```python
        trainer = MetaSparsity(MetaConfig(meta_iters=50), out="runs/meta")
        trainer.train()
        trainer.lam, trainer.log[-1]["group_sparsity"]  # λ and the meta-init's group sparsity
        ```
    """

    def __init__(self, cfg: MetaConfig, out: str | Path, resume: bool = False) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.tasks = cfg.validate()
        self.ckpt_path = self.out / "checkpoint.pt"
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} exists and is not a directory")
        state = None
        if resume:
            state = load_checkpoint(self.ckpt_path, ("config", "model", "rho", "optimizer", "sampler", "iteration"))
            check_resumable(state["config"], asdict(cfg), RESUMABLE_CHANGES, self.ckpt_path)
        elif self.ckpt_path.exists():
            raise ValueError(
                f"out: {self.out} already holds a run; pass --resume to continue it or choose another --out"
            )
        self.device = resolve_device(cfg.device)
        self.backend = get_backend(cfg.backend)

        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model, self.tasks).to(self.device)
        self.groups = channel_groups(self.model, "backbone", cfg.group_mode)
        n_rho = len(self.groups) if cfg.per_layer else 1
        rho0 = torch.full((n_rho,), float(torch.tensor(cfg.lam_init).log()), device=self.device)
        self.rho = (rho0 if cfg.per_layer else rho0[0]).clone().requires_grad_(cfg.learn_lambda)
        groups_of_params = [{"params": self.model.parameters(), "lr": cfg.outer_lr}]
        if cfg.learn_lambda:
            groups_of_params.append({"params": [self.rho], "lr": cfg.lam_lr})
        self.opt = torch.optim.Adam(groups_of_params)
        targets = {t.target for t in self.tasks}
        data = make_dataset(cfg.dataset, "train", cfg.data_root, cfg.image_size, cfg.train_size, cfg.seed, targets)
        self.data = {k: v.to(self.device) for k, v in data.tensors().items() if k == "image" or k in targets}
        subset = "all" if cfg.subset == "all" else int(cfg.subset)
        self.sampler = EpisodeSampler(self.data, self.tasks, cfg.support, cfg.query, subset, cfg.meta_batch, cfg.seed)
        self.iteration, self.log, self.elapsed = 0, [], 0.0
        if state is not None:
            try:
                self.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"{self.ckpt_path}: does not fit model {cfg.model!r} ({e})") from e
            with torch.no_grad():
                self.rho.copy_(state["rho"])
            self.sampler.load_state_dict(state["sampler"])
            self.iteration, self.log, self.elapsed = state["iteration"], state["log"], state["elapsed_s"]

    @property
    def lam(self) -> Tensor:
        return self.rho.exp()

    def meta_step(self) -> dict:
        """One meta-iteration; returns its log entry (λ, outer loss, query loss per task, group sparsity)."""
        cfg = self.cfg
        episodes = self.sampler.sample()
        budget = None if cfg.budget is None else (cfg.budget, cfg.budget_weight)
        entry = meta_update(
            self.model,
            self.groups,
            self.rho,
            self.backend,
            episodes,
            self.tasks,
            cfg.inner(),
            self.opt,
            budget,
        )
        with torch.no_grad():
            self.model.train()
            self.model(torch.cat([ep["test"]["image"] for ep in episodes]), tasks=[t.name for t in self.tasks])
        self.iteration += 1
        return {
            "iteration": self.iteration,
            **entry,
            "group_sparsity": sparsity_report(self.model, self.groups)["group"],
        }

    def checkpoint(self, started: float) -> None:
        save_checkpoint(
            {
                "config": asdict(self.cfg),
                "model": self.model.state_dict(),
                "rho": self.rho.detach().cpu(),
                "optimizer": self.opt.state_dict(),
                "sampler": self.sampler.state_dict(),
                "iteration": self.iteration,
                "log": self.log,
                "elapsed_s": self.elapsed + time.perf_counter() - started,
                "tasks": [t.name for t in self.tasks],
            },
            self.ckpt_path,
        )

    def train(self, progress: bool = True, on_iteration: Callable[[dict], None] | None = None) -> None:
        """Run meta-iterations until ``meta_iters``, checkpointing every ``ckpt_every`` and at the end."""
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        bar = tqdm(total=self.cfg.meta_iters, initial=self.iteration, desc="meta", disable=not progress)
        while self.iteration < self.cfg.meta_iters:
            entry = self.meta_step()
            self.log.append(entry)
            if on_iteration is not None:
                on_iteration(entry)
            bar.update(1)
            lam = entry["lambda"] if isinstance(entry["lambda"], float) else max(entry["lambda"])
            bar.set_postfix(
                lam=f"{lam:.2e}", loss=f"{entry['outer_loss']:.3f}", sparsity=f"{entry['group_sparsity']:.2f}"
            )
            if self.iteration % self.cfg.ckpt_every == 0 or self.iteration == self.cfg.meta_iters:
                self.checkpoint(started)
        bar.close()
        self.elapsed += time.perf_counter() - started

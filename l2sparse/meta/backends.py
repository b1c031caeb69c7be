"""Differentiable inner loops behind one protocol; the only module that knows torch.func, higher or learn2learn.

Every backend answers one question: after ``K`` proximal inner steps on an episode's support batch, what are the
per-task query losses, as tensors differentiable with respect to the model's parameters (the meta-init) and λ?

    loop = get_backend("torchfunc")
    losses = loop.query_losses(model, groups, lam, episode, tasks, InnerConfig(steps=3, lr=0.05))
    sum(losses.values()).backward()      # meta-gradients in model parameters' .grad and in ρ (λ = exp(ρ))

``learn2learn`` is imported only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Protocol

import torch
from torch import Tensor, nn

from l2sparse.errors import ConfigError
from l2sparse.meta.inner import InnerConfig, batch_stats_only, episode_losses, total
from l2sparse.sparsity import ConvGroups, prox
from l2sparse.tasks import Task


class InnerLoop(Protocol):
    """A registered backend (``BACKENDS``): a name, a check of its own library, and the differentiable inner loop."""

    name: str

    @classmethod
    def require(cls) -> ModuleType | None:
        """The backend's library (``None`` when it needs none); a ``ConfigError`` saying how to install it when it
        does not import here."""
        ...

    def query_losses(
        self,
        model: nn.Module,
        groups: Sequence[ConvGroups],
        lam: Tensor,
        episode: Mapping,
        tasks: Sequence[Task],
        cfg: InnerConfig,
    ) -> dict[str, Tensor]:
        """Per-task query losses after ``cfg.steps`` proximal inner steps on ``episode["train"]``.

        Args:
            model: a multi-task model called as ``model(images, tasks=names)``; its parameters are the meta-init.
            groups: the backbone's channel groups (the prox acts on them only).
            lam: λ, a 0-d tensor or one value per group layer; gradients flow into it.
            episode: ``{"train": support batch, "test": query batch}``, targets keyed by task name.
            tasks: the episode's tasks.
            cfg: steps, step size, mode.

        Inner gradients are always computed (also under ``torch.no_grad()``); BatchNorm uses batch statistics and
        leaves the model's running statistics untouched.
        """
        ...


def _step(params: dict[str, Tensor], grads: Sequence[Tensor | None], lr: float, exact: bool) -> dict[str, Tensor]:
    """``θ − α g`` for every parameter with a gradient (heads of absent tasks have none and stay)."""
    return {
        n: p if g is None else p - lr * (g if exact else g.detach())
        for (n, p), g in zip(params.items(), grads, strict=True)
    }


class TorchFuncLoop:
    """``torch.func.functional_call`` over explicit parameter and buffer dicts, gradients by ``torch.autograd``."""

    name = "torchfunc"

    @classmethod
    def require(cls) -> None:
        return None  # torch.func is part of torch

    def query_losses(self, model, groups, lam, episode, tasks, cfg):
        names = [t.name for t in tasks]
        fast = dict(model.named_parameters())
        buffers = dict(model.named_buffers())

        def forward(params: dict[str, Tensor], images: Tensor) -> dict[str, Tensor]:
            return torch.func.functional_call(model, (params, buffers), (images,), {"tasks": names})

        with torch.enable_grad(), batch_stats_only(model):
            for k in range(cfg.steps):
                exact = cfg.exact(k)
                loss = total(episode_losses(forward(fast, episode["train"]["image"]), episode["train"], tasks))
                # a first-order step's support graph is not on the outer path (its gradient is a constant): free it
                grads = torch.autograd.grad(
                    loss, list(fast.values()), create_graph=exact, retain_graph=exact, allow_unused=True
                )
                fast = prox(_step(fast, grads, cfg.lr, exact), groups, lam, cfg.lr)
            return episode_losses(forward(fast, episode["test"]["image"]), episode["test"], tasks)


class HigherLoop:
    """``higher.innerloop_ctx`` with a differentiable SGD; the prox is applied to the fast weights after each step.

    First-order steps pass a ``grad_callback`` that detaches the gradients, so the prox path to λ stays exact.
    """

    name = "higher"

    @classmethod
    def require(cls) -> ModuleType:
        return _require(
            "higher", cls.name, "Install it with `pip install higher` (or the extra: `pip install l2sparse[higher]`)"
        )

    def query_losses(self, model, groups, lam, episode, tasks, cfg):
        higher = self.require()
        names = [t.name for t in tasks]
        param_names = [n for n, _ in model.named_parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        with (
            torch.enable_grad(),
            batch_stats_only(model),
            higher.innerloop_ctx(model, opt, copy_initial_weights=False, track_higher_grads=True) as (fmodel, diffopt),
        ):
            for k in range(cfg.steps):
                loss = total(episode_losses(fmodel(episode["train"]["image"], tasks=names), episode["train"], tasks))
                detach = None if cfg.exact(k) else _detach_all
                diffopt.step(loss, grad_callback=detach)
                fast = prox(dict(zip(param_names, fmodel.fast_params, strict=True)), groups, lam, cfg.lr)
                fmodel.update_params([fast[n] for n in param_names])
            return episode_losses(fmodel(episode["test"]["image"], tasks=names), episode["test"], tasks)


def _detach_all(grads: Sequence[Tensor | None]) -> list[Tensor | None]:
    return [None if g is None else g.detach() for g in grads]


class Learn2LearnLoop:
    """learn2learn's ``MAML``: ``clone()`` then ``adapt(loss)`` per step, the prox applied to the clone's weights
    through ``l2l.utils.update_module``. Optional: needs learn2learn, which needs torchvision and a Python where its
    C extensions build; ``bash scripts/l2l_env.sh`` builds such an environment (``.venv-l2l``)."""

    name = "learn2learn"

    @classmethod
    def require(cls) -> ModuleType:
        return _require(
            "learn2learn",
            cls.name,
            "Install it with `pip install learn2learn` on a Python where it builds (it compiles C extensions and "
            "imports torchvision), or build the ready environment with `bash scripts/l2l_env.sh`",
        )

    def query_losses(self, model, groups, lam, episode, tasks, cfg):
        l2l = self.require()
        names = [t.name for t in tasks]
        maml = l2l.algorithms.MAML(model, lr=cfg.lr, first_order=False, allow_unused=True)
        with torch.enable_grad(), batch_stats_only(model):
            learner = maml.clone()
            for k in range(cfg.steps):
                loss = total(episode_losses(learner(episode["train"]["image"], tasks=names), episode["train"], tasks))
                learner.adapt(loss, first_order=not cfg.exact(k))
                # the clone wraps the model as ``learner.module``: its own names carry a ``module.`` prefix
                before = dict(learner.module.named_parameters())
                after = prox(before, groups, lam, cfg.lr)
                l2l.utils.update_module(learner.module, updates=[after[n] - before[n] for n in before])
            return episode_losses(learner(episode["test"]["image"], tasks=names), episode["test"], tasks)


def _require(module: str, backend: str, how: str) -> ModuleType:
    """Import a backend's library, or raise a ``ConfigError`` naming the backend, the cause and ``how`` to install."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a dependency failing inside the library's own imports
        raise ConfigError(
            f"backend {backend!r} is not importable here ({type(e).__name__}: {e}). {how}; or use --backend torchfunc."
        ) from e


BACKENDS: dict[str, type[InnerLoop]] = {
    "torchfunc": TorchFuncLoop,
    "higher": HigherLoop,
    "learn2learn": Learn2LearnLoop,
}


def importable(name: str) -> bool:
    """Whether a backend's library imports here (tried for real: learn2learn may fail inside its own imports)."""
    try:
        BACKENDS[name].require()
    except ConfigError:
        return False
    return True


def get_backend(name: str) -> InnerLoop:
    """The backend called ``name``; unknown names list the valid ones and which of them import here, a backend whose
    library does not import says how to install it."""
    if name not in BACKENDS:
        status = ", ".join(f"{b} ({'importable' if importable(b) else 'not importable'})" for b in BACKENDS)
        raise ConfigError(f"unknown backend {name!r}; valid backends: {status}")
    BACKENDS[name].require()
    return BACKENDS[name]()

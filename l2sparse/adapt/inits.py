"""The backbone inits ``adapt`` compares, as a registry: each builds ``(backbone state, info)`` for one seed.

Built in: ``meta_sparse`` (meta-sparsity, λ learned), ``meta_dense`` (the same with λ = 0), ``fixed_lambda`` (the
fixed-λ trainer, λ from a grid) and ``random``. [`register_init`][l2sparse.adapt.inits.register_init] adds one;
``--inits`` then accepts its name. Trained inits are cached under the config's cache folder, keyed by
[`RunFolder.cached`][l2sparse.runs.RunFolder.cached]: the config and the task files' contents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from l2sparse import distributed
from l2sparse.checkpoint import load_checkpoint, locked
from l2sparse.errors import CheckpointError
from l2sparse.meta.config import MetaConfig, MetaOptions
from l2sparse.meta.metasparsity import MetaSparsity
from l2sparse.models import backbone_state, check_model, create_model
from l2sparse.runs import RunFolder
from l2sparse.tasks import Task
from l2sparse.train import TrainConfig, train_or_reuse

if TYPE_CHECKING:
    from l2sparse.adapt.config import AdaptConfig

InitState = tuple[dict[str, Tensor], dict]
InitBuilder = Callable[["AdaptConfig", Sequence[Task], bool, int], InitState]


@dataclass(frozen=True)
class InitBaseline:
    """One registered init.

    Attributes:
        build: ``build(cfg, seen tasks, progress, seed) -> (backbone state, info)``; ``info`` holds at least
            ``"lambda"`` (``None`` when it has none).
        cached: it trains into the cache (``--cache-dir`` must then be writable).
    """

    build: InitBuilder
    cached: bool = False


def meta_config(cfg: AdaptConfig, learn: bool, seed: int = 0) -> MetaConfig:
    """The config of one meta init: ``cfg``'s data and meta options; λ learned from λ₀ with the budget, or fixed
    at 0 without it (the meta-dense init)."""
    meta = {f.name: getattr(cfg, f.name) for f in fields(MetaOptions)}
    if not learn:
        meta.update(lam_init=0.0, budget=None, budget_macs=None)
    return MetaConfig(**cfg.shared(), **meta, learn_lambda=learn, seed=seed)


def meta_init(cfg: AdaptConfig, learn: bool, progress: bool, seed: int = 0) -> tuple[dict[str, Tensor], dict]:
    """Backbone state of a meta-trained init (cached), trained with ``seed``, and its λ."""
    mcfg = meta_config(cfg, learn, seed)
    out = RunFolder.cached(cfg.cache_root(), "meta", asdict(mcfg)).path
    with locked(out) if distributed.current().main else contextlib.nullcontext():  # rank 0 speaks for a launch
        trainer = MetaSparsity(mcfg, out, resume=distributed.on_main((out / "checkpoint.pt").exists))
        trainer.train(progress=progress)
    return _backbone_state(trainer.model), {"lambda": trainer.lam.detach().tolist(), "cache": str(out)}


def checkpoint_init(cfg: AdaptConfig, path: str) -> tuple[dict[str, Tensor], dict]:
    """Backbone state from a ``meta_train`` checkpoint, which must match the split and the model."""
    state = load_checkpoint(path, ("config", "model", "rho"))
    saved = state["config"]
    if not (isinstance(saved, dict) and isinstance(state["model"], dict) and torch.is_tensor(state["rho"])):
        raise CheckpointError(f"{path}: not a meta_train checkpoint (config, model or rho of the wrong kind)")
    for key in ("split", "model", "dataset"):
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(
                f"{path}: trained with {key} {saved.get(key)!r}, but this run uses {getattr(cfg, key)!r}"
            )
    backbone = backbone_state(state["model"])
    try:  # the backbone must fit now, not after the other inits have trained
        check_model(cfg.model).backbone().load_state_dict(backbone)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: its backbone does not fit model {cfg.model!r} ({e})") from e
    return backbone, {"lambda": state["rho"].exp().tolist(), "checkpoint": str(path)}


def fixed_lambda_init(
    cfg: AdaptConfig, seen: Sequence[Task], progress: bool, seed: int = 0
) -> tuple[dict[str, Tensor], dict]:
    """The fixed-λ trainer on the seen tasks for every λ of the grid, trained with ``seed``; the lowest mean
    validation loss wins.

    It trains with ``ProxAdam`` at the meta-init's outer learning rate, whose λ is the meta-sparse init's λ (both
    relative to the layer's gradient scale, both on the mean task loss), so the λ columns compare."""
    losses: dict[float, float] = {}
    best = None
    for lam in cfg.lam_grid:
        tcfg = TrainConfig(
            **{**cfg.shared(), "split": None},
            tasks=[t.name for t in seen],
            lam=lam,
            optimizer="adam",
            lr=MetaConfig.outer_lr,
            steps=cfg.fixed_steps,
            test_size=min(cfg.test_size, 200),
            eval_split="val",
            seed=seed,
        )
        trained = train_or_reuse(tcfg, RunFolder.cached(cfg.cache_root(), "fixed", asdict(tcfg)).path, progress)
        metrics = trained.report["metrics"]
        losses[lam] = sum(m["loss"] for m in metrics.values()) / len(metrics)
        if best is None or losses[lam] < losses[best[0]]:
            best = (lam, trained.model)
    state = _backbone_state(best[1])
    return state, {"lambda": best[0], "grid_val_loss": {str(k): v for k, v in losses.items()}}


def random_init(cfg: AdaptConfig, seen: Sequence[Task], seed: int = 0) -> tuple[dict[str, Tensor], dict]:
    torch.manual_seed(seed)
    return _backbone_state(create_model(cfg.model, seen)), {"lambda": None}


def _backbone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}


INIT_BASELINES: dict[str, InitBaseline] = {}


def register_init(name: str, build: InitBuilder, cached: bool = False) -> None:
    """Add an init under ``name`` (see [`InitBaseline`][l2sparse.adapt.inits.InitBaseline])."""
    INIT_BASELINES[name] = InitBaseline(build, cached)


register_init("meta_sparse", lambda cfg, seen, progress, seed: meta_init(cfg, True, progress, seed), cached=True)
register_init("meta_dense", lambda cfg, seen, progress, seed: meta_init(cfg, False, progress, seed), cached=True)
register_init(
    "fixed_lambda",
    lambda cfg, seen, progress, seed: distributed.on_main(lambda: fixed_lambda_init(cfg, seen, progress, seed)),
    cached=True,
)
register_init("random", lambda cfg, seen, progress, seed: random_init(cfg, seen, seed))

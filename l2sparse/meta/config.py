"""Meta-sparsity's configuration: every option of a meta-training run, checked where it is declared."""

from __future__ import annotations

import math
from dataclasses import dataclass

from l2sparse import distributed
from l2sparse.cli import require_positive
from l2sparse.data import require_root
from l2sparse.device import DEVICES
from l2sparse.errors import ConfigError
from l2sparse.guards import check_numbers, require_one_of
from l2sparse.meta.backends import BACKENDS, get_backend
from l2sparse.meta.budget import Budget
from l2sparse.meta.inner import ORDERS, InnerConfig
from l2sparse.models import check_model
from l2sparse.options import DataOptions, option
from l2sparse.tasks import Task, load_registry

INNER_THRESHOLDS = ("absolute", "relative")


@dataclass
class MetaOptions:
    """The options of a meta-sparsity run that ``adapt`` passes on to the meta inits it trains."""

    lam_init: float = option(0.1, "initial λ of meta-sparsity")
    budget: float | None = option(None, "target group sparsity in [0, 1] of the meta-init (optional)")
    budget_macs: float | None = option(None, "target fraction in [0, 1] of the dense backbone's MACs (optional)")
    budget_ramp: float = option(0.5, "fraction of meta-iters over which the budget's target is approached")
    meta_iters: int = option(200, "meta-iterations")
    meta_batch: int = option(
        2, "episodes per meta-iteration (the global meta-batch: under torchrun it divides by the processes)"
    )


@dataclass
class MetaConfig(MetaOptions, DataOptions):
    """Everything that defines a meta-sparsity run (saved in the checkpoint and the report)."""

    split: str = option("synthetic-default")
    backend: str = option("torchfunc", f"inner loop: {', '.join(BACKENDS)}")
    order: str = option("second_order", ", ".join(ORDERS))
    inner_steps: int = option(3, "K inner steps")
    inner_lr: float = option(0.05, "inner step size α")
    truncate: int = option(1, "exact last steps in truncated mode")
    outer_lr: float = option(1e-3, "Adam lr of the meta-init")
    lam_lr: float = option(0.05, "Adam lr of ρ = log λ")
    learn_lambda: bool = option(True, "keep λ at --lam-init (0 allowed)", flag="--fixed-lambda")
    per_layer: bool = option(False, "one λ per backbone layer")
    inner_threshold: str = option(
        "absolute",
        "λ in the inner loop's prox: 'absolute' (threshold αλ√size) or 'relative' (αλ s_l √size, s_l the layer's "
        "gradient scale from the meta-init's Adam, as in its own prox)",
    )
    init_horizon: float = option(
        0.0,
        "meta-iterations over which λ's gradient also follows its effect on the meta-init through the init's own "
        "prox (forward-mode tangent, decay 1 − 1/horizon); 0: off, λ's gradient comes from the inner loops alone",
    )
    keep_norms: bool = option(True, cli=False)
    support: int = option(8, "support images per episode")
    query: int = option(8, "query images per episode")
    subset: str = option("all", "'all' (any non-empty task subset) or a task count")
    group_mode: str = option("in", "'in' or 'out' channel groups")
    seed: int = option(0, "random seed")
    ckpt_every: int = option(50, "checkpoint interval")

    def inner(self) -> InnerConfig:
        return InnerConfig(self.inner_steps, self.inner_lr, self.order, self.truncate)

    def make_budget(self) -> Budget | None:
        """The run's size budget (``budget``: group sparsity, ``budget_macs``: MAC fraction), or None."""
        if not 0 <= self.budget_ramp <= 1:
            raise ConfigError(f"budget-ramp: expected a fraction of meta-iters in [0, 1], got {self.budget_ramp}")
        ramp = round(self.budget_ramp * self.meta_iters)
        if self.budget is not None:
            return Budget(self.budget, "groups", ramp)
        if self.budget_macs is not None:
            return Budget(self.budget_macs, "macs", ramp)
        return None

    def validate(self, world: distributed.World | None = None) -> list[Task]:
        """Check every option, for ``world`` (default: the ``torchrun`` launch this process is part of, if any);
        returns the split's seen tasks. Raises ``ConfigError`` naming the option."""
        check_numbers(self)
        require_one_of("inner-threshold", self.inner_threshold, INNER_THRESHOLDS)
        require_root(self.dataset, self.data_root)
        inner = self.inner()
        if self.learn_lambda and not inner.lambda_exact:
            raise ConfigError(
                f"order: {self.order} with {self.inner_steps} inner steps gives a λ-gradient that ignores how λ "
                "changes the later inner gradients (it can have the wrong sign); to learn λ use second_order, "
                "truncated with --truncate ≥ inner-steps − 1, or --inner-steps 1; or keep λ fixed (--fixed-lambda)"
            )
        get_backend(self.backend)
        registry = load_registry(self.tasks_dir)
        registry.split_of(self.split, self.dataset)
        check_model(self.model)
        if not (self.init_horizon == 0 or self.init_horizon >= 1):
            raise ConfigError(f"init-horizon: expected 0 (off) or ≥ 1 meta-iterations, got {self.init_horizon}")
        if self.learn_lambda and not self.lam_init > 0:
            raise ConfigError(f"lam-init: λ = exp(ρ) must start > 0, got {self.lam_init}")
        if not (math.isfinite(self.lam_init) and self.lam_init >= 0):
            raise ConfigError(f"lam-init: expected a finite λ ≥ 0, got {self.lam_init}")
        if self.budget is not None and self.budget_macs is not None:
            raise ConfigError("budget / budget-macs: give one size target, not both")
        self.make_budget()
        if self.budget_macs is not None and not hasattr(check_model(self.model).backbone(), "channel_spaces"):
            raise ConfigError(
                f"budget-macs: model {self.model!r} does not describe its channel wiring, so its MACs cannot be counted"
            )
        require_positive(
            self, ("meta_iters", "meta_batch", "support", "query", "image_size", "train_size", "ckpt_every")
        )
        for name in ("outer_lr", "lam_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")
        require_one_of("group-mode", self.group_mode, ("in", "out"))
        require_one_of("device", self.device, DEVICES)
        world = world or distributed.launched()
        if self.meta_batch % world.size:
            raise ConfigError(
                f"meta-batch: the global meta-batch ({self.meta_batch}) must divide by the number of processes "
                f"({world.size})"
            )
        distributed.local_device(self.device, world)
        if self.subset != "all" and not self.subset.isdigit():
            raise ConfigError(f"subset: expected 'all' or a task count, got {self.subset!r}")
        return registry.seen(self.split)

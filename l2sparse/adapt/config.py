"""``adapt``'s configuration: every option of an adaptation experiment, checked where it is declared."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from l2sparse import distributed
from l2sparse.adapt.inits import INIT_BASELINES, meta_config
from l2sparse.cli import require_positive
from l2sparse.data import require_root
from l2sparse.device import DEVICES
from l2sparse.errors import ConfigError
from l2sparse.guards import check_numbers
from l2sparse.models import check_model
from l2sparse.tasks import Task, load_registry


@dataclass
class AdaptConfig:
    """Everything that defines an adaptation experiment."""

    task: str = "unseen"
    dataset: str = "synthetic"
    split: str = "synthetic-default"
    data_root: str | None = None
    tasks_dir: list[str] | None = None
    checkpoint: str | None = None
    model: str = "tiny"
    steps: int = 150
    shots: int = 64
    seeds: int = 3
    meta_seeds: int = 1
    lr: float = 1e-3
    batch_size: int = 16
    image_size: int = 32
    train_size: int = 500
    adapt_size: int = 200
    test_size: int = 200
    meta_iters: int = 200
    meta_batch: int = 2
    lam_init: float = 0.1
    budget: float | None = None
    budget_macs: float | None = None
    budget_ramp: float = 0.5
    lam_grid: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3])
    fixed_steps: int = 300
    eval_every: int = 25
    inits: list[str] = field(default_factory=lambda: list(INIT_BASELINES))
    device: str = "auto"
    amp: bool = False
    cache_dir: str | None = None

    def validate(self) -> tuple[list[Task], list[Task]]:
        """Check the options; returns (seen tasks, tasks to adapt to). Raises ``ConfigError`` naming the option."""
        check_numbers(self)
        reg = load_registry(self.tasks_dir)
        split = reg.split_of(self.split, self.dataset)
        if self.task == "unseen":
            targets = reg.unseen(self.split)
        elif self.task in (*split.seen, *split.unseen):
            targets = reg.get(self.dataset, [self.task])
        else:
            raise ConfigError(
                f"task: {self.task!r} is not a task of split {self.split!r}; its tasks: "
                f"{', '.join((*split.seen, *split.unseen))} (or 'unseen' for all unseen ones)"
            )
        check_model(self.model)
        require_root(self.dataset, self.data_root)
        sizes = ("steps", "shots", "seeds", "batch_size", "image_size", "train_size", "adapt_size", "test_size")
        require_positive(self, (*sizes, "meta_seeds", "meta_iters", "fixed_steps", "eval_every"))
        if self.meta_seeds > self.seeds:
            raise ConfigError(f"meta-seeds: expected at most --seeds ({self.seeds}), got {self.meta_seeds}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: expected a finite number > 0, got {self.lr}")
        if self.device not in DEVICES:
            raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.checkpoint is not None and "meta_sparse" not in self.inits:
            raise ConfigError("checkpoint: it replaces the meta_sparse init, but --inits does not include meta_sparse")
        unknown = [i for i in self.inits if i not in INIT_BASELINES]
        if unknown or not self.inits:
            valid = ", ".join(INIT_BASELINES)
            raise ConfigError(f"inits: expected a non-empty selection of {valid}, got {self.inits}")
        if not self.lam_grid or not all(0 <= lam < float("inf") for lam in self.lam_grid):
            raise ConfigError(f"lam-grid: expected finite λ values ≥ 0, got {self.lam_grid}")
        meta_trained = bool(self.trained_inits() & {"meta_sparse", "meta_dense"})
        # λ₀ and the budget, whatever the inits, before any training; the meta-batch split only if it is used
        meta_config(self, learn=True).validate(None if meta_trained else distributed.World())
        distributed.local_device(self.device, distributed.launched())
        return reg.seen(self.split), targets

    def trained_inits(self) -> set[str]:
        """The inits this run trains into the cache: the cached ones it compares, ``meta_sparse`` only without
        ``--checkpoint``."""
        skipped = {"meta_sparse"} if self.checkpoint is not None else set()
        return {name for name in self.inits if name in INIT_BASELINES and INIT_BASELINES[name].cached} - skipped

    def cache_root(self) -> Path:
        return Path(self.cache_dir or os.environ.get("L2SPARSE_CACHE") or Path.home() / ".cache" / "l2sparse")

"""``adapt``'s configuration: every option of an adaptation experiment, checked where it is declared."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from l2sparse import distributed
from l2sparse.adapt.inits import INIT_BASELINES, meta_config
from l2sparse.cli import require_positive
from l2sparse.data import require_root
from l2sparse.device import DEVICES
from l2sparse.errors import ConfigError
from l2sparse.guards import check_numbers, require_one_of
from l2sparse.meta.config import MetaOptions
from l2sparse.models import check_model
from l2sparse.options import DataOptions, option
from l2sparse.tasks import Task, load_registry


@dataclass
class AdaptConfig(MetaOptions, DataOptions):
    """Everything that defines an adaptation experiment."""

    task: str = option("unseen", "'unseen' (every unseen task of the split) or one task name")
    split: str = option(
        "synthetic-default", "split whose seen tasks the meta inits train on and whose unseen tasks are adapted to"
    )
    checkpoint: str | None = option(None, "meta_train checkpoint for the meta-sparse init (else trained, cached)")
    steps: int = option(150, "adaptation steps")
    shots: int = option(64, "training images of the new task")
    seeds: int = option(3, "seeds per task and init")
    meta_seeds: int = option(
        1,
        "trained inits per init, each with its own seed; adaptation seed s starts from init s mod this, so the"
        " spread over seeds includes the spread of training",
    )
    lr: float = option(1e-3, "adaptation Adam lr")
    batch_size: int = option(16, "adaptation batch")
    adapt_size: int = option(200, "images the shots are drawn from")
    test_size: int = option(200, "test images per task")
    lam_grid: list[float] = option(factory=lambda: [0.03, 0.1, 0.3], help="fixed-λ grid", metavar="λ,...")
    fixed_steps: int = option(300, "fixed-λ training steps")
    eval_every: int = option(25, "steps between curve points")
    inits: list[str] = option(factory=lambda: list(INIT_BASELINES), help="inits to compare", metavar="INIT,...")
    amp: bool = option(False, "bf16 autocast for adaptation (for CUDA)")
    vectorise: bool = option(
        True,
        "fine-tune each task's inits × seeds together through torch.func.vmap (faster for small models on a CPU;"
        " results equal the one-by-one path up to float rounding)",
        flag="--no-vectorise",
    )
    cache_dir: str | None = option(
        None, "where trained inits are cached (default: $L2SPARSE_CACHE or ~/.cache/l2sparse)"
    )

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
        require_one_of("device", self.device, DEVICES)
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

"""The fixed-λ trainer's configuration: every option of a run, checked where it is declared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from l2sparse.cli import require_positive
from l2sparse.data import require_root
from l2sparse.device import DEVICES
from l2sparse.errors import ConfigError
from l2sparse.guards import check_numbers, require_one_of
from l2sparse.models import check_model
from l2sparse.options import DataOptions, option
from l2sparse.sparsity import ProxAdam, ProxSGD
from l2sparse.tasks import Task, load_registry
from l2sparse.weighting import WEIGHTINGS

OPTIMIZERS = {"sgd": ProxSGD, "adam": ProxAdam}
RESUMABLE_CHANGES = ("steps", "ckpt_every", "device")  # options that do not change the trajectory so far
BLOW_UP_FIX = "lower the learning rate (train's --lr) or check the data and the task losses"


@dataclass
class TrainConfig(DataOptions):
    """Everything that defines a fixed-λ run (saved in the checkpoint and the report)."""

    tasks: list[str] | None = option(None, "comma-separated task names (default: all of <dataset>-default)")
    split: str | None = option(None, "train on this split's seen tasks (when --tasks is not given)")
    attach: dict[str, str] | None = option(None, cli=False)
    lam: float = option(1e-3, "group-sparsity strength λ ≥ 0")
    steps: int = option(300, "optimiser steps")
    lr: float = option(0.05, "learning rate, also the prox step α")
    optimizer: str = option("sgd", f"{' or '.join(OPTIMIZERS)}")
    weighting: str = option("equal", f"{' or '.join(WEIGHTINGS)}")
    batch_size: int = option(16, "images per step")
    image_size: int = option(64)
    train_size: int = option(1000)
    test_size: int = option(200, "held-out images")
    eval_split: str = option("test", "val or test: where metrics are taken")
    group_mode: str = option("in", "'in' or 'out' channel groups")
    seed: int = option(0, "random seed")
    ckpt_every: int = option(100, "checkpoint interval")

    def validate(self) -> list[Task]:
        """Check every option; returns the resolved tasks. Raises ``ConfigError`` naming the option.

        Tasks: ``tasks`` if given, else the seen tasks of ``split``, else every task of ``<dataset>-default``.
        """
        check_numbers(self)
        require_root(self.dataset, self.data_root)
        reg = load_registry(self.tasks_dir)
        if self.tasks is not None and not all(self.tasks):
            raise ConfigError(f"tasks: expected comma-separated task names, got {','.join(self.tasks)!r}")
        if self.tasks is not None and self.split is not None:
            raise ConfigError("tasks / split: give the tasks or a split whose seen tasks to train, not both")
        if self.tasks is not None:
            tasks = reg.get(self.dataset, self.tasks)
        elif self.split is not None:
            tasks = reg.seen(reg.split_of(self.split, self.dataset).name)
        else:
            default = reg.split(f"{self.dataset}-default")
            tasks = reg.get(self.dataset, (*default.seen, *default.unseen))
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ConfigError(f"data-root: {self.data_root} is not a folder")
        check_model(self.model)
        if not self.lam >= 0:
            raise ConfigError(f"lam: expected λ ≥ 0, got {self.lam}")
        require_positive(self, ("steps", "batch_size", "image_size", "train_size", "test_size", "ckpt_every"))
        if not self.lr > 0:
            raise ConfigError(f"lr: expected a positive learning rate, got {self.lr}")
        for name, valid in (
            ("eval_split", ("val", "test")),
            ("optimizer", OPTIMIZERS),
            ("weighting", WEIGHTINGS),
            ("group_mode", ("in", "out")),
            ("device", DEVICES),
        ):
            require_one_of(name.replace("_", "-"), getattr(self, name), valid)
        return tasks

"""LOMT's configuration, checked where it is declared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from l2sparse.cli import require_positive
from l2sparse.data import require_root
from l2sparse.device import resolve_device
from l2sparse.errors import ConfigError
from l2sparse.guards import check_numbers, require_one_of
from l2sparse.lomt.rules import RULES
from l2sparse.models import MODELS, check_model
from l2sparse.options import DataOptions, option
from l2sparse.tasks import Task, load_registry
from l2sparse.train import TrainConfig


@dataclass
class LomtConfig(DataOptions):
    """Everything that defines a LOMT run: the sparse single-task runs, the rule, the final models."""

    split: str = option("synthetic-default", "split whose seen tasks are used")
    tasks: list[str] | None = option(None, "tasks instead of the split's seen tasks", metavar="TASK,...")
    lam: float = option(0.02, "λ of the sparse single-task runs")
    group_mode: str = option("out", "groups of the sparse runs")
    sparse_steps: int = option(300, "steps of each sparse run")
    trials: int = option(2, "sparse runs per task")
    threshold: float = option(0.01, "a layer is active if more than this fraction of its groups is non-zero")
    rule: str = option("deepest-active", f"attachment rule: {', '.join(RULES)}")
    epsilon: float = option(0.05, "probe rule tolerance")
    probe_steps: int = option(100, "probe head steps")
    attach: dict[str, str] = option(factory=dict, help="fix a task's layer (repeatable)", metavar="TASK=LAYER")
    steps: int = option(300, "steps of the LOMT and plain models")
    test_size: int = option(200, "test images")
    seed: int = option(0, "seed")

    def validate(self) -> list[Task]:
        reg = load_registry(self.tasks_dir)
        reg.split_of(self.split, self.dataset)
        tasks = reg.get(self.dataset, self.tasks) if self.tasks else reg.seen(self.split)
        check_model(self.model)
        require_root(self.dataset, self.data_root)
        require_one_of("rule", self.rule, RULES)
        require_positive(self, ("sparse_steps", "trials", "probe_steps", "steps", "image_size", "train_size"))
        check_numbers(self)
        self.train_config(tasks, lam=self.lam, group_mode=self.group_mode).validate()  # the runs' own options
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"threshold: expected a fraction of active groups in [0, 1), got {self.threshold}")
        if self.epsilon < 0:
            raise ConfigError(f"epsilon: expected a relative loss tolerance ≥ 0, got {self.epsilon}")

        layers = MODELS[self.model].backbone().layer_names
        for task, layer in self.attach.items():
            if task not in {t.name for t in tasks}:
                raise ConfigError(f"attach: {task!r} is not one of the tasks ({', '.join(t.name for t in tasks)})")
            if layer not in layers:
                raise ConfigError(f"attach: unknown layer {layer!r} for {task!r}; valid layers: {', '.join(layers)}")
        resolve_device(self.device)
        return tasks

    def train_config(self, tasks: Sequence[Task], **changes) -> TrainConfig:
        """The fixed-λ trainer's config of one of LOMT's runs on ``tasks``: this run's data options, ``changes``."""
        shared = {**self.shared(), "split": None, "test_size": self.test_size, "seed": self.seed}
        return TrainConfig(**{**shared, "tasks": [t.name for t in tasks], **changes})

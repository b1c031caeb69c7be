"""LOMT's configuration, checked where it is declared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from l2sparse.cli import require_positive
from l2sparse.data import require_root
from l2sparse.device import resolve_device
from l2sparse.errors import ConfigError
from l2sparse.guards import check_numbers
from l2sparse.lomt.rules import RULES
from l2sparse.models import MODELS, check_model
from l2sparse.tasks import Task, load_registry
from l2sparse.train import TrainConfig


@dataclass
class LomtConfig:
    dataset: str = "synthetic"
    split: str = "synthetic-default"
    tasks: list[str] | None = None
    data_root: str | None = None
    tasks_dir: list[str] | None = None
    model: str = "tiny"
    lam: float = 0.02
    group_mode: str = "out"
    sparse_steps: int = 300
    trials: int = 2
    threshold: float = 0.01
    rule: str = "deepest-active"
    epsilon: float = 0.05
    probe_steps: int = 100
    steps: int = 300
    image_size: int = 32
    train_size: int = 500
    test_size: int = 200
    seed: int = 0
    device: str = "auto"
    attach: dict[str, str] = field(default_factory=dict)

    def validate(self) -> list[Task]:
        reg = load_registry(self.tasks_dir)
        reg.split_of(self.split, self.dataset)
        tasks = reg.get(self.dataset, self.tasks) if self.tasks else reg.seen(self.split)
        check_model(self.model)
        require_root(self.dataset, self.data_root)
        if self.rule not in RULES:
            raise ConfigError(f"rule: expected one of {', '.join(RULES)}, got {self.rule!r}")
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
        base = TrainConfig(
            dataset=self.dataset,
            tasks=[t.name for t in tasks],
            data_root=self.data_root,
            tasks_dir=self.tasks_dir,
            model=self.model,
            image_size=self.image_size,
            train_size=self.train_size,
            test_size=self.test_size,
            seed=self.seed,
            device=self.device,
        )
        return TrainConfig(**{**asdict(base), **changes})

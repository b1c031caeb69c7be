"""A task is data: the dataset key it predicts, its head, its loss and its metric family."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from torch import Tensor

from l2sparse.losses import get_loss
from l2sparse.metrics import METERS


@dataclass(frozen=True)
class Task:
    """One prediction task.

    Attributes:
        name: unique name (``"semseg"``).
        target: key of the target in a dataset item (``"semseg"``).
        head: ``"dense"`` (per-pixel, upsampled to the input) or ``"pooled"`` (image-level).
        out_channels: channels of the head's output.
        loss: a name in :data:`l2sparse.losses.LOSSES`.
        metrics: a meter family in :data:`l2sparse.metrics.METERS`.
        meter_args: keyword arguments of the meter (e.g. ``{"num_classes": 6}``).
    """

    name: str
    target: str
    head: str
    out_channels: int
    loss: str
    metrics: str
    meter_args: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_loss(self.loss)
        if self.metrics not in METERS:
            raise ValueError(f"task {self.name!r}: unknown metrics {self.metrics!r}; valid: {', '.join(METERS)}")

    @property
    def loss_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        return get_loss(self.loss)

    def new_meter(self):
        return METERS[self.metrics](**self.meter_args)


def resolve_tasks(available: Mapping[str, Task], names: Iterable[str] | None) -> list[Task]:
    """The tasks called ``names`` (all when ``None``); unknown names raise a ``ValueError`` listing valid ones."""
    if names is None:
        return list(available.values())
    names = list(names)
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or names}; valid tasks: {', '.join(available)}")
    return [available[n] for n in dict.fromkeys(names)]

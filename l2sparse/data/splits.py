"""A dataset split as the tensors every loop reads: ``{"image": (N, 3, H, W), <task name>: target (N, ...)}``.

The dataset's items are keyed by what they hold (``"semseg"``, ``"attributes"``); a task names one of those keys and
may select columns, merge classes or transform it ([`Task.target_of`][l2sparse.tasks.spec.Task.target_of]). That is
done once per split here, so training, evaluation, episodes and adaptation all read a task's target by its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from l2sparse.data import make_dataset
from l2sparse.options import DataOptions
from l2sparse.tasks import Task


def task_view(data: Mapping[str, Tensor], tasks: Sequence[Task]) -> dict[str, Tensor]:
    """``{"image": data["image"], task.name: task.target_of(data)}`` for dataset-keyed tensors ``data``."""
    return {"image": data["image"], **{t.name: t.target_of(data) for t in tasks}}


def load_split(
    cfg: DataOptions,
    split: str,
    size: int,
    tasks: Sequence[Task],
    device: torch.device,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Tensor]:
    """``size`` images of ``split`` of the dataset ``cfg`` names (its folder and image size), drawn with ``seed``,
    with every task's target, stacked and moved to ``device``: ``{"image": (N, 3, H, W), <task name>: (N, ...)}``."""
    keys = {t.target for t in tasks}
    ds = make_dataset(cfg.dataset, split, cfg.data_root, cfg.image_size, size, seed, keys)
    bar: Callable | None = (lambda it: tqdm(it, desc=f"load {split}", leave=False)) if progress else None
    raw = {k: v.to(device) for k, v in ds.tensors(bar).items() if k == "image" or k in keys}
    return task_view(raw, tasks)

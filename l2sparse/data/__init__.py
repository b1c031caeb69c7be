"""Datasets by name and the tasks each one serves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

from l2sparse.data.synthetic import ATTRIBUTES, CLASSES, SyntheticScenes
from l2sparse.tasks import Task


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``make(split, size, image_size, seed)`` and the tasks it serves."""

    make: Callable[..., Dataset]
    tasks: dict[str, Task]
    synthetic: bool


SYNTHETIC_TASKS = {
    t.name: t
    for t in (
        Task("semseg", "semseg", "dense", len(CLASSES), "cross_entropy", "segmentation", {"num_classes": len(CLASSES)}),
        Task("depth", "depth", "dense", 1, "l1_valid", "depth"),
        Task("normals", "normals", "dense", 3, "cosine", "normals"),
        Task("edges", "edges", "dense", 1, "balanced_bce", "binary"),
        Task("attributes", "attributes", "pooled", len(ATTRIBUTES), "bce", "binary"),
    )
}

DATASETS: dict[str, DatasetEntry] = {
    "synthetic": DatasetEntry(SyntheticScenes, SYNTHETIC_TASKS, synthetic=True),
}


def get_dataset(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name]

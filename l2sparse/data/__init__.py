"""Datasets by name, with the metadata task files are checked against (attribute names, class merges)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from l2sparse.data import celeba, synthetic
from l2sparse.data.celeba import CelebAMaskHQ
from l2sparse.data.nyuv2 import NYUv2
from l2sparse.data.synthetic import SyntheticScenes
from l2sparse.errors import ConfigError, DataError

__all__ = ["DATASETS", "DataError", "DatasetEntry", "get_dataset", "make_dataset", "require_root"]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        make: ``make(split, root, image_size, size, seed, targets) -> Dataset``.
        targets: the target keys its items carry (what a task's ``target`` may name).
        needs_root: whether ``--data-root`` is required.
        synthetic: whether the data is generated (reports say so).
        attribute_names: names of the columns of its ``attributes`` target.
        merges: named class merges (lookup tables) for its segmentation targets.
        adapt_split: where unseen tasks take their training images: a split disjoint from both the meta-train
            (``train``) and the evaluation (``test``) images when the dataset has one.
    """

    make: Callable[..., Dataset]
    targets: tuple[str, ...]
    needs_root: bool
    synthetic: bool
    attribute_names: tuple[str, ...] = ()
    merges: dict[str, list[int]] = field(default_factory=dict)
    adapt_split: str = "val"


DATASETS: dict[str, DatasetEntry] = {
    "synthetic": DatasetEntry(
        lambda split, root, image_size, size, seed, targets: SyntheticScenes(split, size or 1000, image_size, seed),
        targets=("semseg", "depth", "normals", "edges", "attributes"),
        needs_root=False,
        synthetic=True,
        attribute_names=synthetic.ATTRIBUTES,
    ),
    "nyuv2": DatasetEntry(
        lambda split, root, image_size, size, seed, targets: NYUv2(root, split, image_size, size=size),
        targets=("semseg", "depth", "normals", "edges"),
        needs_root=True,
        synthetic=False,
        adapt_split="train",  # the MTAN layout's val split *is* the test set
    ),
    "celeba": DatasetEntry(
        lambda split, root, image_size, size, seed, targets: CelebAMaskHQ(
            root, split, image_size, [t for t in ("faceparts", "attributes") if t in targets], size
        ),
        targets=("faceparts", "attributes"),
        needs_root=True,
        synthetic=False,
        attribute_names=celeba.ATTRIBUTES,
        merges=celeba.MERGES,
    ),
}


def get_dataset(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def require_root(name: str, root: str | Path | None) -> DatasetEntry:
    """The registered dataset ``name``, checking that a dataset which reads files was given a folder."""
    entry = get_dataset(name)
    if entry.needs_root and root is None:
        raise ConfigError(f"data-root: dataset {name!r} reads files; pass --data-root")
    if not entry.needs_root and root is not None:
        raise ConfigError(f"data-root: dataset {name!r} is generated and reads no folder; leave --data-root out")
    return entry


def make_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    image_size: int = 64,
    size: int | None = None,
    seed: int = 0,
    targets: Sequence[str] = (),
) -> Dataset:
    """Build a split of a registered dataset; ``targets`` are the item keys the tasks need."""
    return require_root(name, root).make(split, root, image_size, size, seed, targets)

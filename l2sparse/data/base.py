"""What every dataset shares: items as dicts of tensors, an in-memory cache, stacking a split, clear file errors.

Item keys: ``image (3, H, W)`` float in [0, 1], and targets among ``semseg (H, W)`` int64 (-1 = ignore),
``depth (1, H, W)`` metres (0 = invalid), ``normals (3, H, W)`` unit (0 = invalid), ``edges (1, H, W)`` {0, 1},
``faceparts (H, W)`` int64, ``attributes (A,)`` {0, 1}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from l2sparse.errors import DataError


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: missing {what} folder")
    return path


def load_npy(path: Path) -> np.ndarray:
    """``np.load`` with a [`DataError`][] naming the file when it is missing or corrupt."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file missing") from e
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from e


def load_image(path: Path, mode: str, draft: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to an array in PIL ``mode``; ``draft`` lets JPEG decode at a reduced size (fast)."""
    try:
        with Image.open(path) as im:
            if draft is not None:
                im.draft(mode, draft)
            return np.asarray(im.convert(mode))
    except FileNotFoundError as e:
        raise DataError(f"{path}: file missing") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from e


class CachedDataset(Dataset):
    """A map-style dataset whose items are built once by ``load_item`` and kept in memory."""

    def __init__(self) -> None:
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        raise NotImplementedError

    def load_item(self, i: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        if i not in self._cache:
            self._cache[i] = self.load_item(i)
        return self._cache[i]

    def tensors(self, progress: Callable | None = None) -> dict[str, torch.Tensor]:
        """The whole dataset stacked: ``{key: (N, ...)}``."""
        idx = range(len(self))
        items = [self[i] for i in (progress(idx) if progress else idx)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

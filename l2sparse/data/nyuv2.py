"""NYU-v2 in the two common multi-task layouts.

* ``mtan`` (MTAN / LibMTL): ``root/{train,val}/{image,label,depth,normal}/<i>.npy`` with image ``(H, W, 3)`` float
  in [0, 1], label ``(H, W)`` in 0..12 with -1 = ignore, depth ``(H, W)`` or ``(H, W, 1)`` metres with 0 = invalid,
  normal ``(H, W, 3)`` unit vectors with 0 = invalid. ``val`` is the 654-image test set; split ``"test"`` reads it.
* ``nyud_mt`` (ASTMT / MTI-Net): ``root/images/<id>.jpg``, ``segmentation/<id>.png`` (40 classes, 0 = void),
  ``depth/<id>.npy``, ``normals/<id>.npy``, ``edge/<id>.npy`` and ``gt_sets/{train,val}.txt`` listing ids.
  Labels become 0..39 with void = -1.

The layout is detected from the folders present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from l2sparse.data.base import CachedDataset, load_image, load_npy, require_dir
from l2sparse.data.transforms import resize_item
from l2sparse.errors import ConfigError, DataError

MTAN_FOLDERS = ("image", "label", "depth", "normal")
SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}
MTAN_CLASSES = 13
MTAN_SHAPES = {"image": "(H, W, 3)", "label": "(H, W)", "depth": "(H, W) or (H, W, 1)", "normal": "(H, W, 3)"}


def detect_layout(root: Path) -> str:
    if not root.is_dir():
        raise DataError(f"{root}: NYU-v2 root folder does not exist")
    if (root / "train").is_dir() or (root / "val").is_dir():
        return "mtan"
    if (root / "gt_sets").is_dir() or (root / "images").is_dir():
        return "nyud_mt"
    raise DataError(f"{root}: not a NYU-v2 root (expected train/ and val/ folders, or images/ and gt_sets/)")


def check_mtan_array(a: np.ndarray, path: Path, what: str, hw: tuple[int, int]) -> np.ndarray:
    """Validate one MTAN array (``what`` in ``image``, ``label``, ``depth``, ``normal``) against the layout above;
    returns it with depth as ``(H, W)``. Raises a [`DataError`][] naming the file and what was expected."""
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{path}: {what} must hold real numbers, got dtype {a.dtype}")
    if what == "depth" and a.ndim == 3 and a.shape[2] == 1:
        a = a.reshape(a.shape[:2])
    if not (a.ndim == 3 and a.shape[2] == 3 if what in ("image", "normal") else a.ndim == 2):
        raise DataError(f"{path}: expected an {MTAN_SHAPES[what]} {what} array, got shape {a.shape}")
    _hw(a, path, hw, what)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: {what} holds NaN or infinite values")
    if what == "image" and (a.min() < 0 or a.max() > 1):
        raise DataError(f"{path}: image values must be floats in [0, 1], got {a.min():g}..{a.max():g}")
    if what == "label" and ((a != np.round(a)).any() or a.min() < -1 or a.max() > MTAN_CLASSES - 1):
        bad = a[(a != np.round(a)) | (a < -1) | (a > MTAN_CLASSES - 1)].flat[0]
        raise DataError(f"{path}: labels must be integers in -1..{MTAN_CLASSES - 1} (-1 = ignore), got {bad:g}")
    if what == "depth" and a.min() < 0:
        raise DataError(f"{path}: depth must be ≥ 0 metres (0 = invalid), got {a.min():g}")
    return a


def _hw(a: np.ndarray, path: Path, shape: tuple[int, int], what: str) -> None:
    if a.shape[:2] != shape:
        raise DataError(f"{path}: {what} of size {a.shape[:2]} does not match its image {shape}")


class NYUv2(CachedDataset):
    """NYU-v2 items: ``image``, ``semseg``, ``depth``, ``normals`` and (``nyud_mt`` only) ``edges``.

    Args:
        root: dataset root in either layout.
        split: ``"train"``, ``"val"`` or ``"test"`` (MTAN: val and test are the same 654 images).
        image_size: resize every item to ``(H, W)`` (or a square side); ``None`` keeps the stored size.
        size: use only the first ``size`` images.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int | Sequence[int] | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__()
        if split not in SPLIT_FOLDERS:
            raise ConfigError(f"split: unknown split {split!r}; valid splits: {', '.join(SPLIT_FOLDERS)}")
        self.root = Path(root)
        self.layout = detect_layout(self.root)
        self.size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.ids = self._mtan_ids(split) if self.layout == "mtan" else self._nyud_ids(split)
        if size is not None:
            self.ids = self.ids[:size]
        if not self.ids:
            raise DataError(f"{self.root}: no images in split {split!r}")

    def _mtan_ids(self, split: str) -> list[str]:
        base = require_dir(self.root / SPLIT_FOLDERS[split], f"'{SPLIT_FOLDERS[split]}' split")
        self.base = base
        for folder in MTAN_FOLDERS:
            require_dir(base / folder, f"'{folder}'")
        ids = sorted((p.stem for p in (base / "image").glob("*.npy")), key=lambda s: (len(s), s))
        for folder in MTAN_FOLDERS[1:]:
            missing = [i for i in ids if not (base / folder / f"{i}.npy").is_file()]
            if missing:
                raise DataError(f"{base / folder}: missing {len(missing)} file(s), e.g. {missing[0]}.npy")
        return ids

    def _nyud_ids(self, split: str) -> list[str]:
        for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
            require_dir(self.root / folder, f"'{folder}'")
        listing = self.root / "gt_sets" / f"{SPLIT_FOLDERS[split]}.txt"
        if not listing.is_file():
            raise DataError(f"{listing}: missing split file")
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]

    def __len__(self) -> int:
        return len(self.ids)

    def load_item(self, i: int) -> dict[str, torch.Tensor]:
        item = self._load_mtan(self.ids[i]) if self.layout == "mtan" else self._load_nyud(self.ids[i])
        return resize_item(item, tuple(self.size)) if self.size is not None else item

    def _load_mtan(self, i: str) -> dict[str, torch.Tensor]:
        paths = {f: self.base / f / f"{i}.npy" for f in MTAN_FOLDERS}
        arrays = {f: load_npy(paths[f]) for f in MTAN_FOLDERS}
        hw = arrays["image"].shape[:2]  # the image is checked first, so a malformed one fails before hw is used
        image, label, depth, normal = (check_mtan_array(arrays[f], paths[f], f, hw) for f in MTAN_FOLDERS)
        return {
            "image": torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).contiguous(),
            "semseg": torch.from_numpy(np.round(label).astype(np.int64)),
            "depth": torch.from_numpy(depth.astype(np.float32))[None],
            "normals": torch.from_numpy(normal.astype(np.float32)).permute(2, 0, 1).contiguous(),
        }

    def _load_nyud(self, i: str) -> dict[str, torch.Tensor]:
        r = self.root
        image = load_image(r / "images" / f"{i}.jpg", "RGB").astype(np.float32) / 255
        hw = image.shape[:2]
        seg_path = r / "segmentation" / f"{i}.png"
        seg = load_image(seg_path, "L").astype(np.int64) - 1  # 0 = void -> -1
        depth = load_npy(r / "depth" / f"{i}.npy").astype(np.float32)
        normals = load_npy(r / "normals" / f"{i}.npy").astype(np.float32)
        edge = load_npy(r / "edge" / f"{i}.npy").astype(np.float32)
        _hw(seg, seg_path, hw, "segmentation")
        for a, f in ((depth, "depth"), (normals, "normals"), (edge, "edge")):
            _hw(a, r / f / f"{i}.npy", hw, f)
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            "semseg": torch.from_numpy(seg),
            "depth": torch.from_numpy(depth.reshape(hw))[None],
            "normals": torch.from_numpy(normals).permute(2, 0, 1).contiguous(),
            "edges": torch.from_numpy((edge.reshape(hw) > 0).astype(np.float32))[None],
        }

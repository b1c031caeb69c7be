"""CelebAMask-HQ (and CelebA-HQ images with attributes only).

Layout under ``root``:

* ``CelebA-HQ-img/<id>.jpg``: images.
* masks, optional, either merged label maps ``CelebAMask-HQ-mask/<id>.png`` (19 classes, ``CLASSES``) or the
  official per-part binary masks ``CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png`` (merged here in the
  official order, a later part overwriting an earlier one). A mask must have its image's size, or half of it (the
  official 1024 px images with 512 px annotations).
* ``CelebAMask-HQ-attribute-anno.txt``: line 1 the image count, line 2 the 40 attribute names, then one row
  ``<id>.jpg v1 ... v40`` per image with v in {-1, 1} (read as {0, 1}).

There is no official train/val/test partition without the CelebA mapping file, so the split is by id:
``id % 10 == 0`` is test, ``id % 10 == 1`` is val, the rest is train.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from l2sparse.data.base import CachedDataset, load_image, require_dir
from l2sparse.data.transforms import resize_item
from l2sparse.errors import ConfigError, DataError

CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
PARTS = CLASSES[1:]  # official per-part file names, label = index + 1
ATTRIBUTES = tuple(
    [
        "5_o_Clock_Shadow",
        "Arched_Eyebrows",
        "Attractive",
        "Bags_Under_Eyes",
        "Bald",
        "Bangs",
        "Big_Lips",
        "Big_Nose",
        "Black_Hair",
        "Blond_Hair",
        "Blurry",
        "Brown_Hair",
        "Bushy_Eyebrows",
        "Chubby",
        "Double_Chin",
        "Eyeglasses",
        "Goatee",
        "Gray_Hair",
        "Heavy_Makeup",
        "High_Cheekbones",
        "Male",
        "Mouth_Slightly_Open",
        "Mustache",
        "Narrow_Eyes",
        "No_Beard",
        "Oval_Face",
        "Pale_Skin",
        "Pointy_Nose",
        "Receding_Hairline",
        "Rosy_Cheeks",
        "Sideburns",
        "Smiling",
        "Straight_Hair",
        "Wavy_Hair",
        "Wearing_Earrings",
        "Wearing_Hat",
        "Wearing_Lipstick",
        "Wearing_Necklace",
        "Wearing_Necktie",
        "Young",
    ]
)  # the official 40, in file order
ATTRIBUTE_FILE = "CelebAMask-HQ-attribute-anno.txt"
SPLITS = ("train", "val", "test")
# 3 classes as in the seed papers: 0 background (incl. accessories and clothes), 1 hair, 2 skin (face and neck).
MERGES = {
    "19class": list(range(19)),
    "3class": [0, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 0, 0, 0, 2, 0],
}


def split_of(hq_id: int) -> str:
    return {0: "test", 1: "val"}.get(hq_id % 10, "train")


def read_attributes(path: Path) -> tuple[list[str], dict[int, np.ndarray]]:
    """Parse the official attribute file into names and ``{id: (40,) float32 in {0, 1}}``."""
    if not path.is_file():
        raise DataError(f"{path}: attribute file missing")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected the official attribute file") from e
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(f"{path}: line 1 must be the image count, got {lines[0][:40] if lines else ''!r}")
    count, names = int(lines[0]), lines[1].split()
    if tuple(names) != ATTRIBUTES:
        raise DataError(f"{path}: line 2 must list the 40 official attribute names in order, got {len(names)} names")
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise DataError(f"{path}: header says {count} images but the file has {len(rows)} rows")
    table = {}
    for n, row in enumerate(rows, start=3):
        values = row[1:]
        ok_id = row[0].endswith(".jpg") and row[0][:-4].isdigit()
        if len(values) != len(names) or not ok_id or not set(values) <= {"1", "-1"}:
            raise DataError(f"{path}:{n}: expected '<integer id>.jpg' and {len(names)} values in {{-1, 1}}")
        table[int(row[0][:-4])] = (np.array(values, dtype=np.float32) > 0).astype(np.float32)
    return names, table


class CelebAMaskHQ(CachedDataset):
    """CelebAMask-HQ items: ``image (3, S, S)``, ``faceparts (S, S)`` int64 (0..18) when masks exist, and
    ``attributes (40,)``.

    Args:
        root: dataset root (see the module docstring).
        split: ``"train"``, ``"val"`` or ``"test"`` (by id, see module docstring).
        image_size: square side every item is resized to.
        targets: which of ``"faceparts"`` and ``"attributes"`` are needed; only images that have all of them are
            used (images without masks still serve attribute tasks).
        size: use only the first ``size`` images of the split.
    """

    attribute_names: list[str]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 64,
        targets: Sequence[str] = ("attributes",),
        size: int | None = None,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ConfigError(f"split: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        unknown = set(targets) - {"faceparts", "attributes"}
        if unknown:
            raise ConfigError(f"targets: unknown {sorted(unknown)}; valid: faceparts, attributes")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: CelebAMask-HQ root folder does not exist")
        self.image_dir = require_dir(self.root / "CelebA-HQ-img", "'CelebA-HQ-img'")
        self.side, self.targets = image_size, tuple(targets)
        self.attribute_names, self.attributes = read_attributes(self.root / ATTRIBUTE_FILE)
        ids = sorted(int(p.stem) for p in self.image_dir.glob("*.jpg") if p.stem.isdigit())
        missing = [i for i in ids if i not in self.attributes]
        if missing:
            raise DataError(f"{self.root / ATTRIBUTE_FILE}: no row for image {missing[0]}.jpg")
        absent = sorted(set(self.attributes) - set(ids))
        if absent:
            raise DataError(
                f"{self.root / ATTRIBUTE_FILE}: {len(absent)} row(s) name images missing from {self.image_dir} "
                f"(first: {absent[0]}.jpg); restore them or remove their rows (and fix the count on line 1)"
            )
        self.mask_kind = self._mask_kind()
        if "faceparts" in self.targets:
            if self.mask_kind is None:
                raise DataError(
                    f"{self.root}: face-part masks asked for but neither CelebAMask-HQ-mask/ nor "
                    "CelebAMask-HQ-mask-anno/ exists"
                )
            ids = [i for i in ids if self._has_mask(i)]
        self.ids = [i for i in ids if split_of(i) == split][:size]
        if not self.ids:
            raise DataError(f"{self.root}: no images in split {split!r} with targets {', '.join(self.targets)}")

    def _mask_kind(self) -> str | None:
        if (self.root / "CelebAMask-HQ-mask").is_dir():
            return "merged"
        if (self.root / "CelebAMask-HQ-mask-anno").is_dir():
            return "parts"
        return None

    def _part_paths(self, i: int) -> list[tuple[int, Path]]:
        folder = self.root / "CelebAMask-HQ-mask-anno" / str(i // 2000)
        return [(k + 1, folder / f"{i:05d}_{p}.png") for k, p in enumerate(PARTS)]

    def _has_mask(self, i: int) -> bool:
        if self.mask_kind == "merged":
            return (self.root / "CelebAMask-HQ-mask" / f"{i}.png").is_file()
        return any(p.is_file() for _, p in self._part_paths(i))

    def __len__(self) -> int:
        return len(self.ids)

    def _load_mask(self, i: int, image_hw: tuple[int, int]) -> np.ndarray:
        if self.mask_kind == "merged":
            path = self.root / "CelebAMask-HQ-mask" / f"{i}.png"
            mask = load_image(path, "L").astype(np.int64)
            if mask.max() >= len(CLASSES):
                raise DataError(f"{path}: class id {mask.max()} outside 0..{len(CLASSES) - 1}")
        else:
            mask, path = None, None
            for label, p in self._part_paths(i):
                if p.is_file():
                    part = load_image(p, "L")
                    mask = np.zeros(part.shape, np.int64) if mask is None else mask
                    if part.shape != mask.shape:
                        raise DataError(f"{p}: size {part.shape} differs from the other parts {mask.shape}")
                    mask[part != 0] = label
                    path = p
        if mask.shape not in (image_hw, (image_hw[0] // 2, image_hw[1] // 2)):
            raise DataError(f"{path}: mask of size {mask.shape} does not match its image {image_hw}")
        return mask

    def load_item(self, idx: int) -> dict[str, torch.Tensor]:
        i = self.ids[idx]
        path = self.image_dir / f"{i}.jpg"
        draft = None if "faceparts" in self.targets else (self.side, self.side)
        full = load_image(path, "RGB", draft)
        item = {"image": torch.from_numpy(full.astype(np.float32) / 255).permute(2, 0, 1).contiguous()}
        if "faceparts" in self.targets:
            mask = torch.from_numpy(self._load_mask(i, full.shape[:2]))
            item = resize_item(item, tuple(mask.shape))
            item["faceparts"] = mask
        item = resize_item(item, (self.side, self.side))
        if "attributes" in self.targets:
            item["attributes"] = torch.from_numpy(self.attributes[i])
        return item

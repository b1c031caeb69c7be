"""Writers of tiny datasets in the real on-disk formats (nothing is copied from real datasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from l2sparse.data.celeba import ATTRIBUTES


def write_mtan(root: Path, n_train: int = 3, n_val: int = 2, hw: tuple[int, int] = (12, 16)) -> Path:
    """MTAN/LibMTL layout: ``{train,val}/{image,label,depth,normal}/<i>.npy``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for folder in ("image", "label", "depth", "normal"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = rng.integers(-1, 13, hw).astype(np.float32)
            depth = rng.uniform(0.5, 5, (*hw, 1)).astype(np.float32)
            depth[0, 0] = 0  # one invalid pixel
            normal = rng.normal(size=(*hw, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[0, 0] = 0
            np.save(root / split / "image" / f"{i}.npy", rng.uniform(0, 1, (*hw, 3)).astype(np.float32))
            np.save(root / split / "label" / f"{i}.npy", label)
            np.save(root / split / "depth" / f"{i}.npy", depth)
            np.save(root / split / "normal" / f"{i}.npy", normal)
    return root


def write_nyud_mt(root: Path, ids=("0001", "0002", "0003"), hw: tuple[int, int] = (12, 16)) -> Path:
    """NYUD_MT layout: images/*.jpg, segmentation/*.png (0 = void), depth/normals/edge *.npy, gt_sets/*.txt."""
    rng = np.random.default_rng(1)
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 41, hw, dtype=np.uint8), "L").save(root / "segmentation" / f"{i}.png")
        np.save(root / "depth" / f"{i}.npy", rng.uniform(0.5, 5, hw).astype(np.float32))
        np.save(root / "normals" / f"{i}.npy", rng.uniform(-1, 1, (*hw, 3)).astype(np.float32))
        np.save(root / "edge" / f"{i}.npy", (rng.random(hw) > 0.9).astype(np.float32))
    (root / "gt_sets" / "train.txt").write_text("\n".join(ids[:-1]) + "\n")
    (root / "gt_sets" / "val.txt").write_text(ids[-1] + "\n")
    return root


def write_celeba(
    root: Path, ids=(0, 1, 2, 3, 10, 12), masks: str | None = "merged", side: int = 16, mask_ids=None
) -> Path:
    """CelebAMask-HQ layout: images, masks (merged label maps or official per-part PNGs) and the attribute file."""
    rng = np.random.default_rng(2)
    (root / "CelebA-HQ-img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / "CelebA-HQ-img" / f"{i}.jpg")
        values = np.where(np.arange(40) % 2 == i % 2, 1, -1)
        rows.append(f"{i}.jpg  " + " ".join(str(v) for v in values))
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text(
        f"{len(ids)}\n" + " ".join(ATTRIBUTES) + "\n" + "\n".join(rows) + "\n"
    )
    for i in ids if mask_ids is None else mask_ids:
        labels = (np.arange(side * side).reshape(side, side) % 19).astype(np.uint8)
        if masks == "merged":
            (root / "CelebAMask-HQ-mask").mkdir(exist_ok=True)
            Image.fromarray(labels, "L").save(root / "CelebAMask-HQ-mask" / f"{i}.png")
        elif masks == "parts":
            folder = root / "CelebAMask-HQ-mask-anno" / str(i // 2000)
            folder.mkdir(parents=True, exist_ok=True)
            for label, part in ((1, "skin"), (13, "hair")):
                Image.fromarray(((labels == label) * 255).astype(np.uint8), "L").save(folder / f"{i:05d}_{part}.png")
    return root


def l1_branching_in_python(pred: Tensor, target: Tensor) -> Tensor:
    """An L1 loss that branches in Python on a tensor's value: fine for one model, impossible under
    ``torch.func.vmap`` (a user's loss that vectorised adaptation cannot run)."""
    if (target > 0).sum().item() == 0:
        return pred.sum() * 0
    return (pred - target).abs().mean()

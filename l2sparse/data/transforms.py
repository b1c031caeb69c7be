"""Resizing and the usual multi-task augmentation, applied to whole items so every target stays aligned.

Images are resized bilinearly; label-like targets (segmentation, depth, normals, edges) with nearest neighbour so
that invalid values (-1, 0) never blend into valid ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_NEAREST = ("semseg", "faceparts", "depth", "normals", "edges")


def _resize(t: Tensor, size: tuple[int, int], key: str) -> Tensor:
    if key == "image":
        return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    x = t[None, None].float() if t.ndim == 2 else t[None].float()
    y = F.interpolate(x, size=size, mode="nearest-exact")
    return (y[0, 0] if t.ndim == 2 else y[0]).to(t.dtype)


def resize_item(item: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    """Resize the image and every dense target of an item to ``size = (H, W)``."""
    return {k: _resize(v, size, k) if k == "image" or k in _NEAREST else v for k, v in item.items()}


def random_scale_crop_flip(
    item: dict[str, Tensor], generator: torch.Generator, scales: Sequence[float] = (1.0, 1.2, 1.5)
) -> dict[str, Tensor]:
    """MTAN-style augmentation: pick a scale ``s``, crop a ``1/s`` window, resize back, divide depth by ``s``
    (the scene looks ``s`` times closer), then flip horizontally with probability 1/2, negating the normals' x."""
    h, w = item["image"].shape[-2:]
    s = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    ch, cw = int(h / s), int(w / s)
    top = int(torch.randint(h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(w - cw + 1, (1,), generator=generator))
    out = {}
    for k, v in item.items():
        if k == "image" or k in _NEAREST:
            v = _resize(v[..., top : top + ch, left : left + cw], (h, w), k)
        out[k] = v
    if "depth" in out:
        out["depth"] = out["depth"] / s
    if bool(torch.rand((), generator=generator) < 0.5):
        out = {k: v.flip(-1) if k == "image" or k in _NEAREST else v for k, v in out.items()}
        if "normals" in out:
            out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    return out

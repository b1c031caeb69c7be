"""Task losses by name. Each takes ``(pred, target)`` and returns a 0-d tensor.

Invalid targets are excluded, never counted as zeros: segmentation ignores label -1, depth ignores 0, normals
ignore the zero vector. Masks select with ``torch.where``, not boolean indexing, so that every loss has static shapes
and runs under ``torch.func.vmap`` (episodes of a meta-batch batched together).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -1


def _same_shape(pred: Tensor, target: Tensor, loss: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{loss}: prediction shape {tuple(pred.shape)} differs from target {tuple(target.shape)}")


def cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    """Pixel-wise cross-entropy; ``pred (B, C, H, W)`` logits, ``target (B, H, W)`` int64 with -1 = ignore. A batch
    whose pixels are all ignored contributes 0 (torch's mean over no pixels would be NaN)."""
    per_pixel = F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="none")
    return per_pixel.sum() / (target != IGNORE_INDEX).sum().clamp_min(1)


def l1_valid(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over valid pixels; ``pred, target (B, 1, H, W)``, target 0 = invalid."""
    _same_shape(pred, target, "l1_valid")
    valid = target > 0
    return torch.where(valid, (pred - target).abs(), 0.0).sum() / valid.sum().clamp_min(1)


def cosine(pred: Tensor, target: Tensor) -> Tensor:
    """``1 − cos`` between normalised ``pred`` and unit ``target`` ``(B, 3, H, W)``; zero target = invalid."""
    _same_shape(pred, target, "cosine")
    valid = target.abs().sum(1) > 0
    cos = (F.normalize(pred, dim=1) * target).sum(1)
    return torch.where(valid, 1 - cos, 0.0).sum() / valid.sum().clamp_min(1)


def bce(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy on logits; ``pred`` and ``target`` of the same shape, target in {0, 1}."""
    _same_shape(pred, target, "bce")
    return F.binary_cross_entropy_with_logits(pred, target)


def balanced_bce(pred: Tensor, target: Tensor) -> Tensor:
    """Class-balanced BCE for sparse positives (edges): positives weighted by ``#neg / #pos`` of the batch."""
    _same_shape(pred, target, "balanced_bce")
    pos = target.sum()
    pos_weight = ((target.numel() - pos) / pos.clamp_min(1)).detach()
    return F.binary_cross_entropy_with_logits(pred, target, pos_weight=pos_weight)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cross_entropy": cross_entropy,
    "l1_valid": l1_valid,
    "cosine": cosine,
    "bce": bce,
    "balanced_bce": balanced_bce,
}

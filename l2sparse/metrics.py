"""Metrics accumulated over a whole split.

Hand-written because the conventions are the field's (LibMTL / MTAN): mIoU from one confusion matrix over the
split with the ignore label excluded, depth errors over valid pixels only, normal angles in degrees; each meter is a
few lines of ``bincount``/masking and keeps the library free of a metrics dependency.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from l2sparse.losses import IGNORE_INDEX

HIGHER_IS_BETTER = {
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "rel_err": False,
    "mean_angle": False,
    "median_angle": False,
    "within_11.25": True,
    "within_22.5": True,
    "within_30": True,
    "accuracy": True,
    "f1": True,
}


class SegmentationMeter:
    """Confusion matrix over a split; ``update(logits (B, C, H, W), target (B, H, W))``; -1 is ignored."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels = pred.argmax(1) if pred.ndim == target.ndim + 1 else pred
        valid = target != IGNORE_INDEX
        idx = target[valid] * self.num_classes + labels[valid]
        self.confusion += torch.bincount(idx.cpu(), minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict[str, float]:
        """``miou`` averages IoU over classes that occur in target or prediction; ``pixel_acc`` = correct / valid."""
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        return {
            "miou": (tp[present] / union[present]).mean().item() if present.any() else math.nan,
            "pixel_acc": (tp.sum() / cm.sum()).item() if cm.sum() > 0 else math.nan,
        }


class DepthMeter:
    """``abs_err`` = mean |p − t| and ``rel_err`` = mean |p − t| / t over valid pixels (t > 0) of the split."""

    def __init__(self) -> None:
        self.abs_sum = self.rel_sum = 0.0
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = target > 0
        diff = (pred - target).abs()[valid]
        self.abs_sum += diff.sum().item()
        self.rel_sum += (diff / target[valid]).sum().item()
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        n = self.count or math.nan
        return {"abs_err": self.abs_sum / n, "rel_err": self.rel_sum / n}


class NormalMeter:
    """Angle in degrees between normalised prediction and unit target over valid pixels (non-zero target):
    mean, median, and % of pixels within 11.25°, 22.5° and 30°."""

    def __init__(self) -> None:
        self.angles: list[Tensor] = []

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = target.abs().sum(1) > 0
        cos = (F.normalize(pred, dim=1) * target).sum(1).clamp(-1, 1)
        self.angles.append(torch.rad2deg(torch.acos(cos[valid])).double().cpu())

    def compute(self) -> dict[str, float]:
        a = torch.cat(self.angles) if self.angles else torch.zeros(0, dtype=torch.float64)
        if a.numel() == 0:
            return dict.fromkeys(("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"), math.nan)
        return {
            "mean_angle": a.mean().item(),
            "median_angle": a.median().item(),
            "within_11.25": 100 * (a < 11.25).double().mean().item(),
            "within_22.5": 100 * (a < 22.5).double().mean().item(),
            "within_30": 100 * (a < 30).double().mean().item(),
        }


class BinaryMeter:
    """Accuracy and F1 of binary predictions (logit > 0) over all elements of the split (micro average)."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = self.total = self.correct = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        p, t = pred > 0, target > 0.5
        self.tp += int((p & t).sum())
        self.fp += int((p & ~t).sum())
        self.fn += int((~p & t).sum())
        self.correct += int((p == t).sum())
        self.total += t.numel()

    def compute(self) -> dict[str, float]:
        denom = 2 * self.tp + self.fp + self.fn
        return {
            "accuracy": self.correct / self.total if self.total else math.nan,
            "f1": 2 * self.tp / denom if denom else math.nan,
        }


METERS = {
    "segmentation": SegmentationMeter,
    "depth": DepthMeter,
    "normals": NormalMeter,
    "binary": BinaryMeter,
}

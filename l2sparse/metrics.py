"""Metrics accumulated over a whole split.

Hand-written because the conventions are the field's (LibMTL / MTAN): mIoU from one confusion matrix over the
split with the ignore label excluded, depth errors over valid pixels only, normal angles in degrees; each meter is a
few lines of ``bincount``/masking and keeps the library free of a metrics dependency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from l2sparse.losses import IGNORE_INDEX

HIGHER_IS_BETTER: dict[str, dict[str, bool]] = {
    "segmentation": {"miou": True, "pixel_acc": True},
    "depth": {"abs_err": False, "rel_err": False},
    "normals": {
        "mean_angle": False,
        "median_angle": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    },
    "binary": {"accuracy": True, "f1": True, "balanced_accuracy": True, "auroc": True},
    "regression": {"abs_err": False, "rmse": False},
}
"""Per metric family: each metric's name and whether higher values are better (the default of a task file)."""
METRIC_NAMES = {family: tuple(m) for family, m in HIGHER_IS_BETTER.items()}


def _same_shape(pred: Tensor, target: Tensor, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{what}: prediction shape {tuple(pred.shape)} differs from target {tuple(target.shape)}")


class SegmentationMeter:
    """Confusion matrix over a split; ``update(logits (B, C, H, W), target (B, H, W))``; -1 is ignored."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels = pred.argmax(1) if pred.ndim == target.ndim + 1 else pred
        _same_shape(labels, target, "segmentation")
        wrong = labels[(labels < 0) | (labels >= self.num_classes)]
        if wrong.numel():
            raise ValueError(
                f"segmentation: predicted labels {sorted(set(wrong.tolist()))[:5]} outside 0..{self.num_classes - 1}"
            )
        valid = target != IGNORE_INDEX
        bad = target[valid][(target[valid] < 0) | (target[valid] >= self.num_classes)]
        if bad.numel():
            raise ValueError(
                f"segmentation: target labels {sorted(set(bad.tolist()))[:5]} outside 0..{self.num_classes - 1} "
                f"(and {IGNORE_INDEX} = ignore)"
            )
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
        _same_shape(pred, target, "depth")
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
    mean, median, and % of pixels within 11.25°, 22.5° and 30°. Angles are kept (float32) for the exact median."""

    def __init__(self) -> None:
        self.angles: list[Tensor] = []

    def update(self, pred: Tensor, target: Tensor) -> None:
        _same_shape(pred, target, "normals")
        valid = target.abs().sum(1) > 0
        cos = (F.normalize(pred, dim=1) * target).sum(1).clamp(-1, 1)
        self.angles.append(torch.rad2deg(torch.acos(cos[valid])).float().cpu())

    def compute(self) -> dict[str, float]:
        a = torch.cat(self.angles).double() if self.angles else torch.zeros(0, dtype=torch.float64)
        if a.numel() == 0:
            return dict.fromkeys(("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"), math.nan)
        return {
            "mean_angle": a.mean().item(),
            "median_angle": float(np.median(a.numpy())),  # mean of the two middle values, as LibMTL
            "within_11.25": 100 * (a < 11.25).double().mean().item(),
            "within_22.5": 100 * (a < 22.5).double().mean().item(),
            "within_30": 100 * (a < 30).double().mean().item(),
        }


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores (N,)`` for boolean ``labels (N,)``: the Mann–Whitney statistic, ties
    counted one half (average ranks). NaN when one class is absent."""
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores.double())
    sorted_scores = scores.double()[order]
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # average rank of each run of ties
    ranks[order] = mean_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class BinaryMeter:
    """Binary predictions (logit > 0) over a split.

    ``accuracy`` and ``f1`` count every element (micro average). ``balanced_accuracy`` (mean of the true positive
    and true negative rates) and ``auroc`` (threshold-free, from the logits) are computed per output channel
    (dim 1: one attribute) and averaged over the channels that have both classes, so a rare attribute is not
    scored by its majority class. Logits are kept (float32, on the CPU) for the exact AUROC.
    """

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = self.total = self.correct = 0
        self.scores: list[Tensor] = []
        self.labels: list[Tensor] = []

    def update(self, pred: Tensor, target: Tensor) -> None:
        _same_shape(pred, target, "binary")
        p, t = pred > 0, target > 0.5
        self.tp += int((p & t).sum())
        self.fp += int((p & ~t).sum())
        self.fn += int((~p & t).sum())
        self.correct += int((p == t).sum())
        self.total += t.numel()
        channels = pred.shape[1] if pred.ndim > 1 else 1
        self.scores.append(pred.detach().float().reshape(pred.shape[0], channels, -1).transpose(0, 1).flatten(1).cpu())
        self.labels.append(t.reshape(t.shape[0], channels, -1).transpose(0, 1).flatten(1).cpu())

    def compute(self) -> dict[str, float]:
        denom = 2 * self.tp + self.fp + self.fn
        out = {
            "accuracy": self.correct / self.total if self.total else math.nan,
            "f1": 2 * self.tp / denom if denom else math.nan,
            "balanced_accuracy": math.nan,
            "auroc": math.nan,
        }
        if not self.scores:
            return out
        scores, labels = torch.cat(self.scores, dim=1), torch.cat(self.labels, dim=1)
        balanced, areas = [], []
        for s, y in zip(scores, labels, strict=True):
            if y.all() or not y.any():
                continue
            hit = s > 0
            balanced.append(0.5 * ((hit & y).sum() / y.sum() + (~hit & ~y).sum() / (~y).sum()).item())
            areas.append(auroc(s, y))
        if areas:
            out["balanced_accuracy"] = sum(balanced) / len(balanced)
            out["auroc"] = sum(areas) / len(areas)
        return out


class RegressionMeter:
    """``abs_err`` = mean |p − t| and ``rmse`` = √mean (p − t)² over every element of the split (no validity mask,
    unlike ``depth``, which skips targets of 0): for custom targets such as per-image fractions or counts."""

    def __init__(self) -> None:
        self.abs_sum = self.sq_sum = 0.0
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        _same_shape(pred, target, "regression")
        diff = (pred - target).double()
        self.abs_sum += diff.abs().sum().item()
        self.sq_sum += diff.square().sum().item()
        self.count += diff.numel()

    def compute(self) -> dict[str, float]:
        n = self.count or math.nan
        return {"abs_err": self.abs_sum / n, "rmse": math.sqrt(self.sq_sum / n)}


METERS = {
    "segmentation": SegmentationMeter,
    "depth": DepthMeter,
    "normals": NormalMeter,
    "binary": BinaryMeter,
    "regression": RegressionMeter,
}


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    higher_is_better: Mapping[str, Mapping[str, bool]],
) -> float:
    """Multi-task gain over a baseline in percent (LibMTL convention, Maninis et al. 2019):

    ``Δm = 100/T · Σ_t 1/M_t · Σ_m (−1)^{w_m} (B_m − N_m) / B_m`` with ``w_m = 1`` where higher is better, ``B`` the
    baseline's and ``N`` the new model's value. Positive means better than the baseline. The metrics of a task are
    those of ``results[task]`` that ``higher_is_better[task]`` names; other entries (such as the ``loss`` that
    ``engine.evaluate`` adds) are left out. Each must be in ``baseline`` and non-zero there.
    """
    per_task = []
    for task, metrics in results.items():
        if task not in baseline:
            raise KeyError(f"delta_m: no baseline for task {task!r}")
        if task not in higher_is_better:
            raise KeyError(f"delta_m: no higher_is_better for task {task!r}")
        metrics = {m: v for m, v in metrics.items() if m in higher_is_better[task]}
        if not metrics:
            raise ValueError(f"delta_m: task {task!r} has none of its metrics {sorted(higher_is_better[task])}")
        terms = []
        for m, new in metrics.items():
            if m not in baseline[task]:
                raise KeyError(f"delta_m: baseline of task {task!r} has no {m!r}")
            base = baseline[task][m]
            if base == 0:
                raise ValueError(f"delta_m: baseline {task}.{m} is 0, relative change undefined")
            sign = -1.0 if higher_is_better[task][m] else 1.0
            terms.append(sign * (base - new) / base)
        per_task.append(sum(terms) / len(terms))
    return 100.0 * sum(per_task) / len(per_task)

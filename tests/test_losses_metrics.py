"""Losses and metrics against hand-computed values, with ignore labels and invalid pixels."""

from __future__ import annotations

import math

import pytest
import torch

from l2sparse.losses import LOSSES, cosine, cross_entropy, l1_valid
from l2sparse.metrics import (
    BinaryMeter,
    DepthMeter,
    NormalMeter,
    RegressionMeter,
    SegmentationMeter,
    auroc,
    delta_m,
)


def test_segmentation_meter_hand_example_with_ignore():
    target = torch.tensor([[[0, 0, 1, 1, -1]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0]]])
    m = SegmentationMeter(3)
    m.update(pred, target)
    # class 0: tp 1, union 2 -> 0.5 ; class 1: tp 2, union 3 -> 2/3 ; class 2 absent
    r = m.compute()
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["pixel_acc"] == pytest.approx(3 / 4)


def test_depth_meter_skips_invalid_pixels():
    m = DepthMeter()
    m.update(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([2.0, 3.0, 0.0]))
    assert m.compute() == {"abs_err": pytest.approx(0.5), "rel_err": pytest.approx(0.25)}


def test_regression_meter_counts_zero_targets():
    m = RegressionMeter()
    m.update(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]))
    m.update(torch.tensor([[3.0]]), torch.tensor([[5.0]]))
    out = m.compute()
    assert out["abs_err"] == pytest.approx(1.0)  # (1 + 0 + 2) / 3: the zero target counts, unlike depth's
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 3))


def test_normal_meter_angles():
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).view(1, 3, 1, 3)
    pred = torch.tensor([[2.0, 1.0, 5.0], [0.0, 1.0, 5.0], [0.0, 0.0, 5.0]]).view(1, 3, 1, 3)
    m = NormalMeter()
    m.update(pred, target)  # angles 0°, 45°; the third pixel is invalid
    r = m.compute()
    assert r["mean_angle"] == pytest.approx(22.5, abs=1e-4)
    assert r["median_angle"] == pytest.approx(22.5, abs=1e-4)  # mean of the two middle values
    assert r["within_11.25"] == pytest.approx(50.0)
    assert r["within_30"] == pytest.approx(50.0)


def test_binary_meter_accuracy_and_f1():
    m = BinaryMeter()
    m.update(torch.tensor([2.0, -1.0, 3.0, -2.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # tp 1, fp 1, fn 1, tn 1; the positives' logits (2, −1) beat the negatives' (3, −2) in 2 of 4 pairs
    assert m.compute() == {"accuracy": 0.5, "f1": 0.5, "balanced_accuracy": 0.5, "auroc": 0.5}


def test_balanced_accuracy_and_auroc_score_a_rare_class_by_its_own_rates():
    """90 negatives, 10 positives; always predicting "negative" is 90% accurate but 50% balanced accurate."""
    target = torch.zeros(100, 1)
    target[:10] = 1
    m = BinaryMeter()
    m.update(torch.full((100, 1), -1.0), target)
    got = m.compute()
    assert got["accuracy"] == pytest.approx(0.9) and got["balanced_accuracy"] == pytest.approx(0.5)
    assert got["auroc"] == pytest.approx(0.5)  # all scores tied: half credit
    ranked = BinaryMeter()
    ranked.update(torch.linspace(1, -1, 100)[:, None], target)  # every positive above every negative
    assert ranked.compute()["auroc"] == pytest.approx(1.0)


def test_auroc_agrees_with_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (60,), generator=g).float()  # many ties
    labels = torch.rand(60, generator=g) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()
    assert auroc(scores, labels) == pytest.approx(pairs.mean().item())
    assert math.isnan(auroc(scores, torch.zeros(60, dtype=torch.bool)))


def test_multi_column_binary_metrics_average_over_columns():
    m = BinaryMeter()
    pred = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    m.update(pred, target)
    got = m.compute()
    # column 0 is perfect (AUROC 1); column 1: positive 1.0 vs negatives (−1, 1, −1) -> 2.5 / 3
    assert got["auroc"] == pytest.approx((1.0 + 2.5 / 3) / 2)


def test_losses_ignore_invalid_targets():
    logits = torch.tensor([[[[2.0]], [[0.0]]]])
    assert cross_entropy(logits, torch.tensor([[[0]]])).item() == pytest.approx(math.log(1 + math.exp(-2)))
    assert l1_valid(torch.tensor([[[[1.0, 5.0]]]]), torch.tensor([[[[2.0, 0.0]]]])).item() == 1.0
    n = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert cosine(torch.cat([n * 3, n], dim=3), torch.cat([n, n * 0], dim=3)).item() == pytest.approx(0.0)


def test_meters_refuse_mismatched_shapes_and_bad_labels():
    with pytest.raises(ValueError, match=r"binary: prediction shape \(2, 1, 4, 4\) differs from target \(2, 4, 4\)"):
        BinaryMeter().update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="depth: prediction shape"):
        DepthMeter().update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"target labels \[255\] outside 0..2"):
        SegmentationMeter(3).update(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 255], [1, -1]]]))
    with pytest.raises(ValueError, match=r"predicted labels \[3, 7\] outside 0..2"):
        SegmentationMeter(3).update(torch.tensor([[[0, 3], [7, 1]]]), torch.tensor([[[0, 1], [1, -1]]]))
    with pytest.raises(ValueError, match="l1_valid: prediction shape"):
        l1_valid(torch.zeros(2, 1, 4, 4), torch.ones(2, 4, 4))


def test_delta_m_worked_example():
    # seg: mIoU 0.50 -> 0.55 (+10%, higher better), pixel_acc 0.80 -> 0.80 (0%): task mean +5%
    # depth: abs_err 0.40 -> 0.30 (-25% error = +25%, lower better): task mean +25%
    # Δm = (5 + 25) / 2 = +15
    base = {"seg": {"miou": 0.50, "pixel_acc": 0.80}, "depth": {"abs_err": 0.40}}
    new = {"seg": {"miou": 0.55, "pixel_acc": 0.80}, "depth": {"abs_err": 0.30}}
    hib = {"seg": {"miou": True, "pixel_acc": True}, "depth": {"abs_err": False}}
    assert delta_m(new, base, hib) == pytest.approx(15.0)
    assert delta_m(base, new, hib) < 0  # worse than the reference is negative
    assert delta_m(base, base, hib) == 0.0
    with pytest.raises(KeyError, match="no baseline for task 'seg'"):
        delta_m(new, {"depth": base["depth"]}, hib)
    # the dicts engine.evaluate() returns carry a loss beside the metrics: it is not a metric and is left out
    with_loss = {t: {**m, "loss": 1.0} for t, m in new.items()}
    assert delta_m(with_loss, {t: {**m, "loss": 2.0} for t, m in base.items()}, hib) == pytest.approx(15.0)
    with pytest.raises(ValueError, match=r"task 'depth' has none of its metrics \['abs_err'\]"):
        delta_m({"depth": {"loss": 1.0}}, base, hib)
    with pytest.raises(KeyError, match="baseline of task 'depth' has no 'abs_err'"):
        delta_m(new, {**base, "depth": {"rel_err": 0.1}}, hib)


@pytest.mark.parametrize("name", ["cross_entropy", "l1_valid", "cosine", "bce", "balanced_bce"])
def test_every_loss_runs_under_vmap_and_matches_the_loop(name):
    """Masks select with ``torch.where``, so a batch of episodes can go through ``torch.func.vmap``: the vmapped
    losses equal the per-episode ones, invalid targets included."""
    torch.manual_seed(0)
    if name == "cross_entropy":
        pred, target = torch.randn(3, 2, 4, 5, 5), torch.randint(-1, 4, (3, 2, 5, 5))
    elif name == "cosine":
        pred, target = torch.randn(3, 2, 3, 5, 5), torch.nn.functional.normalize(torch.randn(3, 2, 3, 5, 5), dim=2)
        target[:, :, :, :2] = 0  # invalid pixels
    else:
        pred, target = torch.randn(3, 2, 1, 5, 5), (torch.rand(3, 2, 1, 5, 5) > 0.5).float()
        if name == "l1_valid":
            target = target * torch.rand_like(target)  # depth, 0 = invalid
    fn = LOSSES[name]
    batched = torch.func.vmap(fn)(pred, target)
    torch.testing.assert_close(batched, torch.stack([fn(p, t) for p, t in zip(pred, target, strict=True)]))

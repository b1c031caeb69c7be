"""Sparsity report: counts on hand-zeroed groups, MACs against the closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2sparse.sparsity import channel_groups, count_macs, sparsity_report


def test_report_counts_hand_zeroed_groups(tiny):
    groups = channel_groups(tiny)
    with torch.no_grad():
        tiny.backbone.layer1[0].conv1.conv.weight[:, :4] = 0  # 4 of 16 groups, each 16*9 scalars
        tiny.backbone.layer1[0].conv2.conv.weight[0, 0, 0, 0] = 0  # one scalar, no whole group
    rep = sparsity_report(tiny, groups, input_size=(3, 32, 32))
    layer = rep["per_layer"]["backbone.layer1.0.conv1.conv"]
    assert (layer["groups"], layer["zero_groups"], layer["group_sparsity"]) == (16, 4, 0.25)
    assert layer["zero_params"] == 4 * 16 * 9
    assert rep["per_layer"]["backbone.layer1.0.conv2.conv"]["zero_groups"] == 0
    total_groups = sum(v["groups"] for v in rep["per_layer"].values())
    assert rep["group"] == pytest.approx(4 / total_groups)
    total = sum(v["params"] for v in rep["per_layer"].values())
    assert rep["param"] == pytest.approx((4 * 16 * 9 + 1) / total)
    assert rep["macs"] > 0 and rep["params"] == sum(p.numel() for p in tiny.parameters())


def test_macs_match_the_closed_form():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 10 * 12, 5))
    assert count_macs(m, (3, 10, 12)) == 8 * 3 * 9 * 10 * 12 + 8 * 10 * 12 * 5

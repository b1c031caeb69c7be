"""Compaction removes dead channels physically and leaves every task output unchanged."""

from __future__ import annotations

import pytest
import torch
from conftest import zero_input_groups
from torch import nn

from l2sparse.models import create_model
from l2sparse.sparsity import channel_groups, compact, count_params, max_output_difference, sparsity_report


@pytest.mark.parametrize("train_mode", [False, True])
def test_tiny_compaction_is_exact_and_smaller(tiny, train_mode):
    zero_input_groups(tiny, 0.6)
    tiny.train(train_mode)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    small = compact(tiny).train(train_mode)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())  # the original is untouched
    x = torch.randn(4, 3, 48, 40)
    assert max_output_difference(tiny, small, x) <= 1e-5
    assert count_params(small) < count_params(tiny)
    assert sparsity_report(tiny, channel_groups(tiny))["group"] > 0.3


def test_resnet50_compaction_is_exact_on_a_small_input(tasks):
    model = create_model("resnet50", tasks).eval()
    zero_input_groups(model, 0.5)
    small = compact(model).eval()
    x = torch.randn(2, 3, 32, 32)
    assert max_output_difference(model, small, x) <= 1e-5
    assert count_params(small.backbone) < 0.8 * count_params(model.backbone)


def test_nothing_zero_means_nothing_removed(tiny):
    small = compact(tiny)
    assert count_params(small) == count_params(tiny)


def test_output_groups_with_zero_batchnorm_affine_are_removed(tiny):
    tiny.eval()
    groups = channel_groups(tiny, mode="out")
    named = dict(tiny.named_parameters())
    mid = next(g for g in groups if g.layer == "backbone.layer3.0.conv1.conv")  # its output is the block's mid space
    with torch.no_grad():
        for key in (mid.weight, *mid.extras):
            named[key][:20] = 0
    small = compact(tiny).eval()
    assert small.backbone.layer3[0].conv1.conv.out_channels == 44  # 64 - 20
    assert small.backbone.layer3[0].conv2.conv.in_channels == 44
    assert max_output_difference(tiny, small, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_tied_residual_channels_go_only_when_every_reader_is_zero(tasks):
    model = create_model("resnet50", tasks).eval()
    stage = model.backbone.layer1  # block 0 projects 64 -> 256; blocks 1 and 2 are identity: one tied stream
    readers = [stage[1].conv1.conv, stage[2].conv1.conv, model.backbone.layer2[0].conv1.conv]
    readers.append(model.backbone.layer2[0].shortcut.proj.conv)
    with torch.no_grad():
        for r in readers[:-1]:
            r.weight[:, :10] = 0
    assert compact(model).backbone.layer1[0].conv3.conv.out_channels == 256  # one reader still reads them
    with torch.no_grad():
        readers[-1].weight[:, :10] = 0
    small = compact(model).eval()
    for blk in (small.backbone.layer1[0].conv3, small.backbone.layer1[0].shortcut.proj):
        assert blk.conv.out_channels == 246
    assert small.backbone.layer2[0].shortcut.proj.conv.in_channels == 246
    assert max_output_difference(model, small, torch.randn(1, 3, 32, 32)) <= 1e-5


def test_channels_read_by_heads_and_the_input_image_stay(tiny):
    with torch.no_grad():
        tiny.backbone.stem[0].conv.weight[:, 0] = 0  # red channel unread: the input cannot lose it
    small = compact(tiny)
    assert small.backbone.stem[0].conv.in_channels == 3
    assert small.backbone.layer3[0].conv2.conv.out_channels == tiny.backbone.out_channels["layer3"]


def test_a_model_without_wiring_is_rejected():
    with pytest.raises(TypeError, match="channel_spaces"):
        compact(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_heads_at_intermediate_layers_keep_the_backbone_usable(tasks):
    model = create_model("tiny", tasks, attach={t.name: "layer1" for t in tasks}).eval()
    zero_input_groups(model, 0.5, seed=3)
    with torch.no_grad():
        model.backbone.layer2[0].conv1.conv.weight[:, :4] = 0  # layer1's stream: unread by layer2 for channels 0..3
        model.backbone.layer2[0].shortcut.proj.conv.weight[:, :4] = 0
    small = compact(model).eval()
    x = torch.randn(2, 3, 32, 32)
    assert max_output_difference(model, small, x) <= 1e-5
    # the last layer's output stays whole, and out_channels tells the truth for every layer
    feats = small.backbone(x, small.backbone.layer_names)
    for name, f in feats.items():
        assert f.shape[1] == small.backbone.out_channels[name]
    assert small.backbone.out_channels["layer3"] == 64


def test_output_groups_on_a_tied_residual_stream(tasks):
    model = create_model("resnet50", tasks).eval()
    stage = model.backbone.layer1
    producers = [stage[0].conv3, stage[0].shortcut.proj, stage[1].conv3, stage[2].conv3]
    with torch.no_grad():
        for unit in producers[:-1]:
            unit.bn.weight[:8] = 0
            unit.bn.bias[:8] = 0
    assert compact(model).backbone.layer1[0].conv3.conv.out_channels == 256  # one producer still writes them
    with torch.no_grad():
        producers[-1].bn.weight[:8] = 0
        producers[-1].bn.bias[:8] = 0
    small = compact(model).eval()
    assert small.backbone.layer1[2].conv3.conv.out_channels == 248
    assert max_output_difference(model, small, torch.randn(1, 3, 32, 32)) <= 1e-5

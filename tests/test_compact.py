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


def _kill_output_channels(model, convs, n: int) -> None:
    """Zero the first ``n`` output-channel groups (filter, BatchNorm γ and β) of the named convs, in place."""
    named = dict(model.named_parameters())
    groups = {g.layer: g for g in channel_groups(model, mode="out")}
    with torch.no_grad():
        for layer in convs:
            for key in (groups[layer].weight, *groups[layer].extras):
                named[key][:n] = 0


LAST_PRODUCERS = ("backbone.layer3.0.conv2.conv", "backbone.layer3.0.shortcut.proj.conv")


@pytest.mark.parametrize("train_mode", [False, True])
def test_dead_channels_of_the_features_heads_read_leave_backbone_and_heads(tiny, train_mode):
    _kill_output_channels(tiny, LAST_PRODUCERS, 20)
    tiny.train(train_mode)
    small = compact(tiny).train(train_mode)
    assert max_output_difference(tiny, small, torch.randn(4, 3, 32, 40)) <= 1e-5
    assert small.backbone.out_channels["layer3"] == 44
    assert small.backbone.layer3[0].shortcut.proj.conv.out_channels == 44
    for t in ("semseg", "depth"):
        assert small.heads[t].reduce.conv.in_channels == 44
        assert small.heads[t].reduce.conv.weight.shape == (8, 44, 1, 1)
    assert small.heads["attributes"].fc.weight.shape == (6, 44)
    # layer3.0.conv2 loses 20 filters of 64x3x3 and its BN 2x20, the shortcut 20 of 32x1x1 and 2x20, each dense
    # head's 1x1 reduction 8x20 input weights, the pooled head's linear layer 6x20
    assert count_params(tiny) - count_params(small) == 20 * 64 * 9 + 40 + 20 * 32 + 40 + 2 * 8 * 20 + 6 * 20


def test_channels_one_producer_still_writes_or_that_hold_a_constant_stay(tiny):
    _kill_output_channels(tiny, LAST_PRODUCERS[:1], 20)  # the shortcut still writes channels 0..19
    assert compact(tiny).backbone.out_channels["layer3"] == 64
    _kill_output_channels(tiny, LAST_PRODUCERS[1:], 20)
    with torch.no_grad():
        tiny.backbone.layer3[0].conv2.bn.bias[:5] = 0.5  # γ = 0, β = 0.5: a constant 0.5 (after the ReLU), not dead
    small = compact(tiny).eval()
    assert small.backbone.out_channels["layer3"] == 49
    assert max_output_difference(tiny.eval(), small, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_features_read_by_a_head_without_input_layers_stay_whole(tiny):
    class Opaque(nn.Module):
        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.head = head

        def forward(self, x, size):
            return self.head(x, size)

    _kill_output_channels(tiny, LAST_PRODUCERS, 20)
    tiny.heads["depth"] = Opaque(tiny.heads["depth"])
    small = compact(tiny)
    assert small.backbone.out_channels["layer3"] == 64
    assert small.heads["semseg"].reduce.conv.in_channels == 64


def _randomize_batchnorms(model, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (16, 3, 32, 48)])
def test_fused_compact_model_matches_in_eval_mode_without_batchnorms(tiny, shape):
    _randomize_batchnorms(tiny)
    zero_input_groups(tiny, 0.5)
    _kill_output_channels(tiny, LAST_PRODUCERS, 20)
    tiny.eval()
    small = compact(tiny).eval()
    fused = compact(tiny, fuse=True)
    assert not fused.training
    assert max_output_difference(tiny, fused, torch.randn(*shape)) <= 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    # each BatchNorm's 2n parameters become its conv's n biases
    bn_features = sum(m.num_features for m in small.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_params(fused) == count_params(small) - bn_features
    assert fused.backbone.out_channels == small.backbone.out_channels


def test_fusing_a_model_in_train_mode_is_refused(tiny):
    with pytest.raises(ValueError, match=r"eval\(\)"):
        compact(tiny.train(), fuse=True)

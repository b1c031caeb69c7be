"""Model registry, output shapes, intermediate features and truncated forwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2sparse.errors import ConfigError
from l2sparse.models import MODELS, create_model
from l2sparse.models.backbones import tiny_backbone
from l2sparse.models.registry import Backbone, missing_members, register_model
from l2sparse.sparsity import count_params


def test_registry_lists_valid_names_on_error(tasks):
    assert {"tiny", "resnet50"} <= set(MODELS)
    with pytest.raises(ConfigError, match="unknown model 'resnet18'; valid models: resnet50, small, tiny"):
        create_model("resnet18", tasks)


def test_tiny_size_and_output_shapes(tiny):
    assert 5_000 <= count_params(tiny) <= 100_000
    out = tiny(torch.randn(2, 3, 40, 56))
    assert out["semseg"].shape == (2, 6, 40, 56)
    assert out["depth"].shape == (2, 1, 40, 56)
    assert out["attributes"].shape == (2, 6)


def test_resnet50_is_a_dilated_output_stride_8_backbone(tasks):
    model = create_model("resnet50", tasks)
    bb = model.backbone
    assert 23e6 < count_params(bb) < 24.5e6
    assert bb.reduction["layer4"] == 8 and bb.out_channels["layer4"] == 2048
    feats = bb(torch.randn(1, 3, 64, 64), ["layer1", "layer4"])
    assert feats["layer1"].shape == (1, 256, 16, 16)
    assert feats["layer4"].shape == (1, 2048, 8, 8)
    assert bb.layer4[1].conv2.conv.dilation == (4, 4)


def test_features_by_layer_name_and_truncation(tiny):
    calls = []
    for name in tiny.backbone.layer_names:
        getattr(tiny.backbone, name).register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    feats = tiny.backbone(torch.randn(1, 3, 32, 32), ["layer1"])
    assert list(feats) == ["layer1"] and feats["layer1"].shape == (1, 16, 16, 16)
    assert calls == ["stem", "layer1"]  # deeper layers never ran
    with pytest.raises(ValueError, match="unknown layer 'layer9'; valid layers: stem, layer1, layer2, layer3"):
        tiny.backbone(torch.randn(1, 3, 32, 32), ["layer9"])


def test_heads_can_attach_at_an_intermediate_layer(tasks):
    model = create_model("tiny", tasks, attach={"depth": "layer1"})
    assert model.attach == {"semseg": "layer3", "depth": "layer1", "attributes": "layer3"}
    calls = []
    model.backbone.layer2.register_forward_hook(lambda *a: calls.append("layer2"))
    assert model(torch.randn(1, 3, 32, 32), ["depth"])["depth"].shape == (1, 1, 32, 32)
    assert calls == []
    with pytest.raises(ValueError, match="unknown layer"):
        create_model("tiny", tasks, attach={"depth": "conv5"})
    with pytest.raises(ValueError, match="unknown task"):
        model(torch.randn(1, 3, 32, 32), ["normals"])


def test_the_built_in_backbones_meet_the_protocol():
    for name in ("tiny", "small", "resnet50"):
        built = MODELS[name].backbone()
        assert isinstance(built, Backbone) and isinstance(built, nn.Module) and missing_members(built) == [], name


def test_register_model_checks_the_backbone_protocol():
    assert isinstance(tiny_backbone(), Backbone)
    with pytest.raises(TypeError, match=r"register_model\('plain'\): .* \(layer_names, reduction, check_layer, "):
        register_model("plain", lambda: nn.Conv2d(3, 8, 3))
    assert "plain" not in MODELS
    register_model("tiny-again", tiny_backbone, hidden=8)
    try:
        assert MODELS["tiny-again"].dense_head == {"hidden": 8}
    finally:
        del MODELS["tiny-again"]

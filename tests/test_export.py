"""An exported compact model (``torch.export``, ONNX) gives the compact model's outputs at any input size."""

from __future__ import annotations

import pytest
import torch
from conftest import zero_input_groups

from l2sparse.models import create_model
from l2sparse.sparsity import compact, export_model, export_onnx, load_onnx, max_output_difference
from l2sparse.tasks import load_registry

SHAPES = [(1, 3, 64, 64), (3, 3, 48, 40), (2, 3, 32, 32)]


@pytest.fixture(scope="module")
def fused():
    """A compacted, BatchNorm-fused tiny model with group sparsity in the backbone (exported once per module)."""
    torch.manual_seed(0)
    model = create_model("tiny", load_registry().get("synthetic", ["semseg", "depth", "attributes"]))
    zero_input_groups(model, 0.5)
    with torch.no_grad():
        model.backbone.layer3[0].conv2.bn.weight[:16] = 0  # 16 of the features the heads read are dead
        model.backbone.layer3[0].conv2.bn.bias[:16] = 0
        model.backbone.layer3[0].shortcut.proj.bn.weight[:16] = 0
        model.backbone.layer3[0].shortcut.proj.bn.bias[:16] = 0
    small = compact(model.eval(), fuse=True)
    assert small.backbone.out_channels["layer3"] == 48
    return small


@pytest.fixture(scope="module")
def program(fused):
    return export_model(fused, torch.rand(2, 3, 64, 64))


def test_exported_program_equals_the_compact_model_at_other_sizes(fused, program):
    exported = program.module()
    for shape in SHAPES:
        x = torch.rand(*shape)
        assert max_output_difference(fused, exported, x) <= 1e-5
        assert list(exported(x)) == ["semseg", "depth", "attributes"]


def test_exporting_in_train_mode_or_from_a_size_one_example_is_refused(tasks):
    model = create_model("tiny", tasks)
    with pytest.raises(ValueError, match=r"eval\(\)"):
        export_model(model.train(), torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="B, H, W >= 2"):
        export_model(model.eval(), torch.rand(1, 3, 32, 32))  # torch.export would fix the batch size at 1


def test_onnx_export_runs_in_onnxruntime_with_the_same_outputs(fused, program, tmp_path):
    pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnx and onnxscript")
    pytest.importorskip("onnxruntime", reason="running the ONNX graph needs onnxruntime")
    export_onnx(program, tmp_path / "model.onnx")
    run = load_onnx(tmp_path / "model.onnx", threads=1)
    for shape in SHAPES:
        x = torch.rand(*shape)
        got = run(x)
        assert list(got) == ["semseg", "depth", "attributes"]
        assert got["semseg"].shape == (shape[0], 6, *shape[2:])  # 6 classes; batch and size stay dynamic
        assert max_output_difference(fused, run, x) <= 1e-5

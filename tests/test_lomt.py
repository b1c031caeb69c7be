"""LOMT: layer activity, the attachment rules, truncated forwards, equality with the full model, the pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from l2sparse.errors import ConfigError
from l2sparse.lomt import (
    LomtConfig,
    active_layers,
    activity_from_states,
    deepest_active,
    earliest_within,
    layer_activity,
    main,
)
from l2sparse.lomt.experiment import LomtReport
from l2sparse.models import create_model
from l2sparse.tasks import load_registry

LAYERS = ["stem", "layer1", "layer2", "layer3"]


@pytest.fixture
def depth():
    return load_registry().get("synthetic", ["depth"])


def test_activity_of_hand_zeroed_groups(depth):
    model = create_model("tiny", depth)
    bb = model.backbone
    with torch.no_grad():
        bb.layer2[0].conv1.conv.weight[:, :8] = 0  # 8 of the 16 input groups of conv1
        bb.layer3[0].conv1.conv.weight.zero_()  # every group of every layer3 conv
        bb.layer3[0].conv2.conv.weight.zero_()
        bb.layer3[0].shortcut.proj.conv.weight.zero_()
    act = layer_activity(model)
    # layer2 groups: conv1 16 + conv2 32 + shortcut 16 = 64, of which 8 are zero
    assert act == {"stem": 1.0, "layer1": 1.0, "layer2": 56 / 64, "layer3": 0.0}


def test_a_layer_is_active_only_if_active_in_every_trial():
    trials = [{"stem": 1.0, "layer1": 0.5, "layer2": 0.02}, {"stem": 1.0, "layer1": 0.005, "layer2": 0.3}]
    assert active_layers(trials, 0.01) == {"stem": True, "layer1": False, "layer2": True}


def test_attachment_rules_on_a_constructed_example():
    active = {"stem": True, "layer1": True, "layer2": False, "layer3": False}
    assert deepest_active(active, LAYERS) == "layer1"
    assert deepest_active(dict.fromkeys(LAYERS, True), LAYERS) == "layer3"
    assert deepest_active({"stem": True, "layer1": False, "layer2": True, "layer3": False}, LAYERS) == "layer2"
    losses = {"stem": 2.0, "layer1": 1.04, "layer2": 1.0, "layer3": 1.01}
    assert earliest_within(losses, LAYERS, 0.05) == "layer1"
    assert earliest_within(losses, LAYERS, 0.0) == "layer2"


def test_truncation_really_skips_deeper_layers_and_outputs_match_the_full_model(depth):
    tasks = load_registry().get("synthetic", ["depth", "semseg"])
    lomt = create_model("tiny", tasks, attach={"depth": "layer1"}).eval()
    ran = []
    for name in LAYERS:
        getattr(lomt.backbone, name).register_forward_hook(lambda *a, name=name: ran.append(name))
    x = torch.randn(2, 3, 32, 32)
    out = lomt(x, ["depth"])
    assert ran == ["stem", "layer1"]  # layer2 and layer3 were never executed
    ran.clear()
    lomt(x)
    assert ran == LAYERS  # with semseg (attached at the end) in the set, the whole backbone runs
    full = create_model("tiny", tasks).eval()
    full.backbone.load_state_dict(lomt.backbone.state_dict())
    feats = full.backbone(x, ["layer1"])["layer1"]  # the full model's layer1 features into the same head
    torch.testing.assert_close(out["depth"], lomt.heads["depth"](feats, (32, 32)))


def test_activity_from_runs_of_a_different_model_is_refused(depth):
    small = create_model("small", depth).state_dict()
    with pytest.raises(ConfigError, match="run 0 of task 'depth' is not a 'tiny' model"):
        activity_from_states("tiny", depth, {"depth": [small]})


def test_unknown_attachment_layer_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="attach: unknown layer 'layer7' for 'depth'; valid layers: stem, layer1"):
        LomtConfig(tasks=["depth"], attach={"depth": "layer7"}).validate()


def test_pipeline_writes_report_heat_map_and_side_by_side_costs(tmp_path):
    args = ["--tasks", "semseg,depth", "--sparse-steps", "8", "--steps", "8", "--trials", "2", "--image-size", "16",
            "--train-size", "24", "--test-size", "8", "--attach", "depth=layer1", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip
    report = main(args)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert set(on_disk) == LomtReport.__required_keys__  # exactly the keys the typed report declares
    assert on_disk["attach"]["depth"] == "layer1"
    assert len(on_disk["activity"]["semseg"]) == 2 and set(on_disk["activity"]["semseg"][0]) == set(LAYERS)
    costs = on_disk["task_sets"]
    assert costs["depth"]["lomt"]["macs"] < costs["depth"]["plain"]["macs"]  # depth stops after layer1
    # with semseg in the set the whole backbone runs anyway, and depth's head now reads stride-2 features: the pair
    # costs a little more than in the plain model, a real trade-off the report shows
    assert costs["semseg+depth"]["lomt"]["macs"] > costs["semseg+depth"]["plain"]["macs"]
    assert set(on_disk["metrics"]) == {"lomt", "plain"} and "miou" in on_disk["metrics"]["lomt"]["semseg"]
    assert (tmp_path / "activity.png").read_bytes()[:4] == b"\x89PNG"
    assert "| depth | layer1 |" in report["table"]


def test_probe_rule_picks_a_layer(tmp_path):
    args = ["--tasks", "depth", "--rule", "probe", "--sparse-steps", "6", "--probe-steps", "4", "--steps", "4",
            "--trials", "1", "--image-size", "16", "--train-size", "24", "--test-size", "8", "--quiet",
            "--out", str(tmp_path)]  # fmt: skip
    report = main(args)
    losses = report["probe_val_loss"]["depth"]
    assert set(losses) == set(LAYERS)
    chosen = LAYERS.index(report["attach"]["depth"])  # the earliest layer within 5% of the best probe
    assert losses[LAYERS[chosen]] <= 1.05 * min(losses.values())
    assert all(losses[layer] > 1.05 * min(losses.values()) for layer in LAYERS[:chosen])


def test_runs_kept_in_out_are_reused_only_with_the_same_options(tmp_path, capsys):
    args = ["--tasks", "depth", "--sparse-steps", "4", "--steps", "4", "--trials", "1", "--image-size", "16",
            "--train-size", "16", "--test-size", "8", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    first = main(args)
    assert main(args)["activity"] == first["activity"]  # same options: the kept runs are reused
    with pytest.raises(SystemExit):
        main([*args, "--lam", "0.5"])
    assert "saved with different lam" in capsys.readouterr().err

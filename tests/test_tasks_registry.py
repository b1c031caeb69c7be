"""Task definitions are data: built-in files, a user's folder, and clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from l2sparse.data.episodes import task_batch
from l2sparse.data.synthetic import SyntheticScenes
from l2sparse.errors import ConfigError
from l2sparse.tasks import TaskFileError, load_registry
from l2sparse.tasks.__main__ import main as tasks_main
from l2sparse.train import TrainConfig, train
from l2sparse.train import main as train_main

CUSTOM_LOSS = """
import torch


def brightness_loss(pred, target):
    return torch.nn.functional.mse_loss(pred, target)
"""

BRIGHTNESS = """
name = "brightness"
dataset = "synthetic"
description = "mean image brightness, a target the library does not know"
target = "brightness"
head = "pooled"
out_channels = 1
loss = "my_losses:brightness_loss"
metrics = "depth"
"""


def train_tiny(tmp_path, tasks: list[str]) -> dict:
    """Three fixed-λ steps on 16 px synthetic scenes with the user tasks in ``tmp_path / "tasks"``."""
    cfg = TrainConfig(
        tasks=tasks,
        tasks_dir=[str(tmp_path / "tasks")],
        steps=3,
        image_size=16,
        train_size=8,
        test_size=4,
        batch_size=4,
    )
    return train(cfg, tmp_path / "run", progress=False).report


def test_builtin_tasks_and_splits():
    reg = load_registry()
    assert {"semseg", "depth", "normals", "edges", "has_cylinder"} <= set(reg.tasks["synthetic"])
    split = reg.split("synthetic-default")
    assert "normals" in split.unseen and "semseg" in split.seen
    assert not set(split.seen) & set(split.unseen)
    for name in ("nyuv2-default", "celeba-default"):
        assert reg.seen(name) and reg.unseen(name)
    assert reg.get("nyuv2", ["depth"])[0].higher_is_better == {"abs_err": False, "rel_err": False}


def test_a_task_defined_only_in_a_user_folder_loads_with_its_own_loss(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_losses.py").write_text(CUSTOM_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mean_depth.toml").write_text(BRIGHTNESS.replace('target = "brightness"', 'target = "depth"'))
    task = load_registry(tmp_path / "tasks").get("synthetic", ["brightness"])[0]
    assert task.loss_fn(torch.ones(2, 1), torch.zeros(2, 1)).item() == 1.0
    assert task.source.endswith("mean_depth.toml")


def test_a_user_task_over_an_existing_target_trains_end_to_end(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_losses.py").write_text(CUSTOM_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "inverse_depth.toml").write_text(
        BRIGHTNESS.replace('"brightness"', '"depth_mse"')
        .replace('target = "depth_mse"', 'target = "depth"')
        .replace('head = "pooled"', 'head = "dense"')
    )
    report = train_tiny(tmp_path, ["depth_mse", "semseg"])
    assert set(report["metrics"]) == {"depth_mse", "semseg"}
    assert report["metrics"]["depth_mse"]["abs_err"] > 0


NEAR_CODE = """
import torch


def near(depth):
    return (depth < 3.0).float()


def weighted_bce(pred, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(pred, target, pos_weight=torch.tensor(2.0))
"""

NEAR = """
name = "near"
dataset = "synthetic"
target = "depth"
transform = "near_task:near"
head = "dense"
out_channels = 1
loss = "near_task:weighted_bce"
metrics = "binary"
"""


def test_a_transform_derives_a_new_target_everywhere_the_task_is_used(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "near_task.py").write_text(NEAR_CODE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "near.toml").write_text(NEAR)
    near = load_registry(tmp_path / "tasks").get("synthetic", ["near"])[0]
    depth = torch.tensor([[[[0.5, 2.9], [3.0, 7.0]]]])
    assert near.target_of({"depth": depth}).tolist() == [[[[1.0, 1.0], [0.0, 0.0]]]]
    batch = SyntheticScenes("train", size=4, image_size=16).tensors(progress=False)
    episode = task_batch(batch, torch.arange(4), [near])
    assert torch.equal(episode["near"], (batch["depth"] < 3).float())
    assert 0 < episode["near"].mean() < 1
    report = train_tiny(tmp_path, ["near", "semseg"])
    assert set(report["metrics"]["near"]) == {"accuracy", "f1", "balanced_accuracy", "auroc", "loss"}
    assert 0 <= report["metrics"]["near"]["accuracy"] <= 1


FLOOR_CODE = """
def floor_fraction(semseg):
    return (semseg == 0).float().mean((1, 2)).unsqueeze(1)


def flat(semseg):
    return (semseg == 0).float().mean((1, 2))
"""

FLOOR = """
name = "floor_fraction"
dataset = "synthetic"
target = "semseg"
transform = "floor_task:floor_fraction"
head = "pooled"
out_channels = 1
loss = "my_losses:brightness_loss"
metrics = "regression"
"""


def test_a_regression_target_trains_and_a_misshapen_one_names_the_task(tmp_path, monkeypatch, capsys):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "floor_task.py").write_text(FLOOR_CODE)
    (tmp_path / "code" / "my_losses.py").write_text(CUSTOM_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "floor.toml").write_text(FLOOR)
    task = load_registry(tmp_path / "tasks").get("synthetic", ["floor_fraction"])[0]
    assert task.higher_is_better == {"abs_err": False, "rmse": False}
    report = train_tiny(tmp_path, ["floor_fraction"])
    assert 0 <= report["metrics"]["floor_fraction"]["abs_err"] <= 1
    (tmp_path / "tasks" / "floor.toml").write_text(FLOOR.replace("floor_task:floor_fraction", "floor_task:flat"))
    with pytest.raises(SystemExit):
        train_main(["--tasks-dir", str(tmp_path / "tasks"), "--tasks", "floor_fraction", "--steps", "2",
                    "--image-size", "16", "--train-size", "8", "--test-size", "4",
                    "--out", str(tmp_path / "bad")])  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    assert "task 'floor_fraction' (" in errors[0] and "floor.toml): target shape (16,) does not fit" in errors[0]
    assert "head's output (16, 1); check what transform 'floor_task:flat' returns" in errors[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BRIGHTNESS.replace('head = "pooled"\n', ""), r"missing field\(s\) \['head'\]"),
        (BRIGHTNESS, "target 'brightness' is not in 'synthetic' items; valid targets: semseg, depth"),
        (BRIGHTNESS + 'colour = "red"\n', r"unknown field\(s\) \['colour'\]; valid fields: name, dataset"),
        (BRIGHTNESS.replace('"synthetic"', '"kitti"'), "unknown dataset 'kitti'; valid datasets: synthetic"),
        (
            BRIGHTNESS.replace("my_losses:brightness_loss", "nowhere:loss"),
            "neither a built-in .* nor importable .*on PYTHONPATH",
        ),
        (BRIGHTNESS.replace("out_channels = 1", 'out_channels = "one"'), "field 'out_channels' must be int"),
        (BRIGHTNESS + 'attributes = ["has_dragon"]\n', r"unknown attribute\(s\) \['has_dragon'\]; valid: has_sphere"),
        (BRIGHTNESS + "[higher_is_better]\nspeed = true\n", "higher_is_better takes true/false for abs_err, rel_err"),
        ('name = "x"\ndataset = [\n', "not valid TOML"),
        (BRIGHTNESS + 'transform = "nowhere:near"\n', "transform 'nowhere:near' is not importable"),
        (BRIGHTNESS + 'primary = "auroc"\n', "unknown primary metric 'auroc'; valid for 'depth': abs_err, rel_err"),
    ],
)
def test_bad_task_files_name_the_file_and_the_problem(tmp_path, monkeypatch, text, message):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_losses.py").write_text(CUSTOM_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(TaskFileError, match=rf"bad\.toml: .*{message}"):
        load_registry(tmp_path)


def test_bad_split_files(tmp_path):
    (tmp_path / "splits").mkdir()
    split = tmp_path / "splits" / "mine.toml"
    split.write_text('name = "mine"\ndataset = "synthetic"\nseen = ["semseg", "telepathy"]\nunseen = ["depth"]\n')
    with pytest.raises(TaskFileError, match=r"mine\.toml: unknown task\(s\) \['telepathy'\]"):
        load_registry(tmp_path)
    split.write_text('name = "mine"\ndataset = "synthetic"\nseen = ["semseg"]\nunseen = ["semseg"]\n')
    with pytest.raises(TaskFileError, match="both seen and unseen"):
        load_registry(tmp_path)
    split.write_text('name = "synthetic-default"\ndataset = "synthetic"\nseen = ["semseg"]\nunseen = []\n')
    with pytest.raises(TaskFileError, match="split 'synthetic-default' already defined"):
        load_registry(tmp_path)


def test_unknown_names_list_the_valid_ones():
    reg = load_registry()
    with pytest.raises(ConfigError, match="unknown split 'nyu'; valid splits: celeba-attributes, celeba-default"):
        reg.split("nyu")
    with pytest.raises(
        ConfigError, match=r"unknown task\(s\) \['albedo'\] for dataset 'nyuv2'; valid tasks: depth, edges"
    ):
        reg.get("nyuv2", ["albedo"])


def test_cli_lists_tasks_and_splits(capsys, tmp_path):
    tasks_main(["list"])
    out = capsys.readouterr().out
    rows = out.split("splits")[0].splitlines()[1:]
    assert ["synthetic", "normals"] in [r.split()[:2] for r in rows] and ["celeba", "Smiling"] in [
        r.split()[:2] for r in rows
    ]
    assert len({r.index(" dense/") if " dense/" in r else r.index(" pooled/") for r in rows}) == 1  # columns line up
    assert "synthetic-default" in out and "unseen: normals, has_cylinder" in out
    (tmp_path / "bad.toml").write_text('name = "x"\n')
    with pytest.raises(SystemExit) as exc:
        tasks_main(["list", "--tasks-dir", str(tmp_path)])
    assert exc.value.code == 2 and "missing field(s)" in capsys.readouterr().err


def test_segmentation_targets_are_labels_of_the_logits_size():
    semseg = load_registry().get("synthetic", ["semseg"])[0]
    semseg.check_target(torch.zeros(2, 6, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TaskFileError, match=r"task 'semseg' \(.*semseg\.toml\): target shape \(2, 1, 4, 4\) .*"
                       r"expected labels \(2, 4, 4\)"):  # fmt: skip
        semseg.loss_fn(torch.zeros(2, 6, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long))


def test_a_task_file_names_its_primary_metric(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_losses.py").write_text(CUSTOM_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    mean_depth = BRIGHTNESS.replace('target = "brightness"', 'target = "depth"')
    (tmp_path / "mean_depth.toml").write_text(mean_depth + 'primary = "rel_err"\n')
    reg = load_registry(tmp_path)
    assert reg.get("synthetic", ["brightness"])[0].primary_metric == "rel_err"
    assert reg.get("synthetic", ["depth"])[0].primary_metric == "abs_err"  # no primary: the family's first metric
    assert reg.get("celeba", ["Mustache"])[0].primary_metric == "auroc"


def test_an_unknown_primary_metric_stops_a_command_before_it_writes(tmp_path, capsys):
    from l2sparse.adapt import main as adapt_main

    (tmp_path / "tasks").mkdir()
    bad = BRIGHTNESS.replace('"brightness"', '"depth"').replace("my_losses:brightness_loss", "l1_valid")
    (tmp_path / "tasks" / "bad.toml").write_text(bad.replace('name = "depth"', 'name = "bad"') + 'primary = "f1"\n')
    with pytest.raises(SystemExit) as exc:
        adapt_main(["--tasks-dir", str(tmp_path / "tasks"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "bad.toml: unknown primary metric 'f1'" in err[0]
    assert not (tmp_path / "out").exists()

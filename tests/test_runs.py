"""The run folder: the out-folder guard, resuming, and reusing a finished run keyed by its config."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from l2sparse.checkpoint import save_checkpoint
from l2sparse.errors import CheckpointError, ConfigError
from l2sparse.runs import RunFolder, cache_key
from l2sparse.tasks import BUILTIN_DIR, task_files_digest
from l2sparse.train import TrainConfig, train_or_reuse

SMALL = {"steps": 3, "image_size": 16, "train_size": 8, "test_size": 4, "batch_size": 4, "tasks": ["depth"]}


def test_a_finished_run_is_reused_with_its_model_and_another_config_retrains(tmp_path):
    cfg = TrainConfig(lam=0.1, **SMALL)
    first = train_or_reuse(cfg, tmp_path / "run", progress=False)
    again = train_or_reuse(cfg, tmp_path / "run", progress=False)
    assert again.report == first.report  # read back, not trained again (the wall time would differ)
    for k, v in first.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0)
    folder = RunFolder(tmp_path / "run")
    assert folder.finished(asdict(cfg)) == first.report
    assert folder.finished(asdict(TrainConfig(lam=0.2, **SMALL))) is None


def test_start_guards_the_folder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    config = asdict(TrainConfig(**SMALL))
    assert folder.start(False, config, ("model",), ()) is None  # an empty folder: a fresh run
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt"):
        folder.start(True, config, ("model",), ())  # nothing to resume
    train_or_reuse(TrainConfig(**SMALL), folder.path, progress=False)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        folder.start(False, config, ("model",), ())
    assert folder.start(True, config, ("model", "step"), ())["step"] == SMALL["steps"]
    with pytest.raises(CheckpointError, match="saved with different lam"):
        folder.start(True, {**config, "lam": 5.0}, ("model",), ())


def test_an_unreadable_report_is_named(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.report.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"report\.json: not a readable report"):
        folder.finished({})


def test_cache_entries_follow_the_config_and_the_task_files(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    config = {**asdict(TrainConfig(**SMALL)), "tasks_dir": [str(tasks)]}
    entry = RunFolder.cached(tmp_path, "fixed", config)
    assert entry.path == tmp_path / f"fixed-{cache_key(config)}"
    assert RunFolder.cached(tmp_path, "fixed", {**config, "lam": 0.5}) != entry
    (tasks / "extra.toml").write_text('[task]\nname = "x"\n')
    assert RunFolder.cached(tmp_path, "fixed", config) != entry  # an edited task folder retrains


def test_a_run_is_not_reused_after_its_task_file_changed(tmp_path):
    """The same config over an edited task file is another run: reusing or resuming the old one would be a silent
    wrong answer, so it is refused with the reason."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    text = (BUILTIN_DIR / "synthetic" / "depth.toml").read_text().replace('name = "depth"', 'name = "my_depth"')
    (tasks / "my_depth.toml").write_text(text)
    cfg = TrainConfig(**{**SMALL, "tasks": ["my_depth"]}, tasks_dir=[str(tasks)])
    first = train_or_reuse(cfg, tmp_path / "run", progress=False)
    assert first.report["task_files"] == task_files_digest([str(tasks)])
    (tasks / "my_depth.toml").write_text(text.replace("optical axis", "optical axis, in metres"))
    with pytest.raises(CheckpointError, match="saved while its task files read differently"):
        train_or_reuse(cfg, tmp_path / "run", progress=False)


def test_a_report_is_reused_only_with_the_checkpoint_it_was_written_from(tmp_path):
    """A report next to a checkpoint that moved on (a resume with more steps that stopped early) is not paired with
    it: the run is resumed and its report written again from the checkpoint."""
    cfg = TrainConfig(lam=0.1, **SMALL)
    train_or_reuse(cfg, tmp_path / "run", progress=False)
    folder = RunFolder(tmp_path / "run")
    state = torch.load(folder.checkpoint, weights_only=False)
    save_checkpoint({**state, "step": SMALL["steps"] + 2}, folder.checkpoint)
    folder.report.write_text(
        folder.report.read_text().replace('"train_loss_final": ', '"train_loss_final": 123.0, "x": ')
    )
    again = train_or_reuse(cfg, folder.path, progress=False)
    assert again.report["train_loss_final"] != 123.0  # written again, not read
    for k, v in again.model.state_dict().items():
        torch.testing.assert_close(v, state["model"][k], rtol=0, atol=0)

"""Atomic checkpoint writes and clear errors on bad checkpoint files."""

from __future__ import annotations

import pytest
import torch

from l2sparse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_and_no_temporary_files_left(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 3, "w": torch.arange(4)}, path)
    state = load_checkpoint(path, required=("step",))
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncated_missing_and_incomplete_checkpoints_are_named(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1, "w": torch.randn(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"c\.pt: not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")
    save_checkpoint({"step": 1}, path)
    with pytest.raises(CheckpointError, match="lacks model"):
        load_checkpoint(path, required=("step", "model"))

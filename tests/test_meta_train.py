"""The meta-sparsity trainer and CLI: report, plot, exact resume, clear errors that overwrite nothing."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import l2sparse.meta.metasparsity as ms
from l2sparse.checkpoint import load_checkpoint
from l2sparse.meta.backends import TorchFuncLoop
from l2sparse.meta.report import MetaReport
from l2sparse.meta_train import main

TINY = ["--image-size", "16", "--train-size", "24", "--support", "4", "--query", "4", "--quiet"]


def run(out, *extra) -> dict:
    return main([*TINY, "--out", str(out), *extra])


def test_report_and_plot(tmp_path):
    rep = run(tmp_path / "m", "--meta-iters", "3", "--lam-init", "0.05", "--budget", "0.5")
    on_disk = json.loads((tmp_path / "m" / "report.json").read_text())
    assert set(on_disk) == MetaReport.__required_keys__  # exactly the keys the typed report declares
    assert on_disk["lambda_init"] == 0.05 and len(on_disk["lambda_trajectory"]) == 3
    assert on_disk["backend"] == "torchfunc" and on_disk["order"] == "second_order"
    assert 0 <= on_disk["sparsity"]["group"] <= 1 and on_disk["params"]["compact"] <= on_disk["params"]["dense"]
    assert set(on_disk["query_loss_final"]) <= set(rep["tasks"])
    png = (tmp_path / "m" / "meta_trajectory.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_sparsity_is_learned_gradually_not_a_first_step_collapse(tmp_path):
    """A strong λ from a dense random init: no group dies in the first meta-iteration, groups then die a few at a
    time while λ keeps moving, and no layer is emptied in one step (the former per-layer prox step zeroed whole
    residual convs at iteration 1 and froze the pattern)."""
    run(tmp_path / "m", "--meta-iters", "12", "--lam-init", "10", "--train-size", "64")
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    groups = rep["group_sparsity_trajectory"]
    layers = rep["layer_sparsity_trajectory"]
    assert groups[0] < 0.05
    assert groups[3] < groups[7] < groups[-1] and groups[-1] > 0.25
    assert len(set(rep["lambda_trajectory"])) == 12  # λ is learned: it moves at every iteration
    for name, trajectory in layers.items():
        for before, after in itertools.pairwise(trajectory):
            assert not (before < 0.5 and after == 1.0), f"{name} emptied in one meta-iteration: {before} -> {after}"


def test_per_layer_lambda_and_other_backends_run(tmp_path):
    rep = run(tmp_path / "p", "--meta-iters", "2", "--per-layer", "--backend", "higher", "--order", "truncated",
              "--inner-steps", "2", "--truncate", "1")  # fmt: skip
    assert isinstance(rep["lambda_final"], list) and len(rep["lambda_final"]) == len(rep["sparsity"]["per_layer"])
    tangent = run(tmp_path / "t", "--meta-iters", "2", "--per-layer", "--backend", "higher", "--order", "truncated",
                  "--inner-steps", "2", "--truncate", "1", "--init-horizon", "20")  # fmt: skip
    moved = [a != b for a, b in zip(rep["lambda_final"], tangent["lambda_final"], strict=True)]
    assert sum(moved) > len(moved) // 2  # the init term reaches most layers' λ


def test_a_relative_inner_threshold_scales_lambda_by_each_layers_gradient_scale(tmp_path, monkeypatch):
    """``--inner-threshold relative``: the inner loop gets λ·s_l per layer, s_l from the meta-init's Adam state (ones
    before its first step), a constant; λ still learns through it."""
    seen = []
    inner = TorchFuncLoop.query_losses

    def spy(self, model, groups, lam, episode, tasks, cfg):
        seen.append(lam.detach().clone())
        return inner(self, model, groups, lam, episode, tasks, cfg)

    monkeypatch.setattr(TorchFuncLoop, "query_losses", spy)
    expected = []
    step = ms.MetaSparsity.meta_step

    def record(self):
        expected.append(self.lam.detach() * self.inner_scale())
        return step(self)

    monkeypatch.setattr(ms.MetaSparsity, "meta_step", record)
    rep = run(tmp_path / "r", "--meta-iters", "3", "--meta-batch", "1", "--inner-threshold", "relative")
    assert len(seen) == 3 and all(lam.shape == (len(rep["sparsity"]["per_layer"]),) for lam in seen)
    assert torch.allclose(seen[0], expected[0]) and torch.all(seen[0] == seen[0][0])  # iteration 1: λ in every layer
    for got, want in zip(seen[1:], expected[1:], strict=True):
        assert torch.allclose(got, want)
        assert got.max() / got.min() > 1.5  # per-layer scales that differ
        assert got.max() < 0.1 * rep["lambda_init"]  # gradient scales are small: a much weaker inner threshold
    assert len(set(rep["lambda_trajectory"])) == 3  # λ moves


@pytest.mark.parametrize("extra", [(), ("--inner-threshold", "relative", "--init-horizon", "50")])
def test_interrupted_run_resumes_to_the_same_parameters_and_lambda(tmp_path, monkeypatch, extra):
    """Also with λ's gradient through the meta-init's prox, whose tangent is part of the checkpoint."""
    args = ("--meta-iters", "5", "--ckpt-every", "2", "--lam-init", "0.05", "--meta-batch", "2", *extra)
    run(tmp_path / "straight", *args)

    real, calls = ms.meta_update, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ms, "meta_update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", *args)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 2
    monkeypatch.setattr(ms, "meta_update", real)
    run(tmp_path / "resumed", *args, "--resume")

    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert torch.equal(a["rho"], b["rho"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [e["lambda"] for e in a["log"]] == [e["lambda"] for e in b["log"]]
    if extra:
        assert a["init_tangent"].keys() == b["init_tangent"].keys()
        assert all(torch.equal(a["init_tangent"][k], b["init_tangent"][k]) for k in a["init_tangent"])
        assert any(bool(v.abs().sum() > 0) for v in a["init_tangent"].values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "jax"], "unknown backend 'jax'; valid backends: torchfunc (importable), higher (importable)"),
        (["--inner-steps", "0"], "inner-steps: expected ≥ 1, got 0"),
        (["--split", "nyuv2-default"], "split: 'nyuv2-default' belongs to dataset 'nyuv2', not 'synthetic'"),
        (["--split", "atlantis"], "unknown split 'atlantis'; valid splits:"),
        (["--lam-init", "0"], "lam-init: λ = exp(ρ) must start > 0"),
        (["--inner-threshold", "scaled"], "inner-threshold: expected one of absolute, relative, got 'scaled'"),
        (["--init-horizon", "0.5"], "init-horizon: expected 0 (off) or ≥ 1 meta-iterations, got 0.5"),
        (["--group-mode", "sideways"], "group-mode: expected one of in, out, got 'sideways'"),
        (["--device", "tpu"], "device: expected one of auto, cpu, cuda, got 'tpu'"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        run(tmp_path / "x", *args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()


def test_a_split_without_seen_tasks_is_refused(tmp_path, capsys):
    (tmp_path / "tasks" / "splits").mkdir(parents=True)
    (tmp_path / "tasks" / "splits" / "empty.toml").write_text(
        'name = "empty"\ndataset = "synthetic"\nseen = []\nunseen = ["normals"]\n'
    )
    with pytest.raises(SystemExit):
        run(tmp_path / "x", "--split", "empty", "--tasks-dir", str(tmp_path / "tasks"))
    assert "a split needs at least one seen task" in capsys.readouterr().err


def test_bad_checkpoints_are_named_and_left_as_they_are(tmp_path, capsys):
    run(tmp_path / "m", "--meta-iters", "1")
    ckpt = tmp_path / "m" / "checkpoint.pt"
    saved = ckpt.read_bytes()
    with pytest.raises(SystemExit):
        run(tmp_path / "m", "--meta-iters", "2", "--model", "resnet50", "--resume")
    assert "saved with different model" in capsys.readouterr().err
    assert ckpt.read_bytes() == saved
    ckpt.write_bytes(saved[: len(saved) // 2])
    with pytest.raises(SystemExit):
        run(tmp_path / "m", "--meta-iters", "2", "--resume")
    assert "not a readable checkpoint (truncated or corrupt" in capsys.readouterr().err
    assert ckpt.read_bytes() == saved[: len(saved) // 2]
    with pytest.raises(SystemExit):
        run(tmp_path / "m", "--meta-iters", "2")
    assert "already holds a run; pass --resume" in capsys.readouterr().err

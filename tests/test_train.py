"""The fixed-λ trainer: sparsity responds to λ, the report is complete, runs resume exactly, bad input is refused."""

from __future__ import annotations

import json

import pytest
import torch

import l2sparse.train.trainer as train_mod
from l2sparse.checkpoint import CheckpointError, load_checkpoint
from l2sparse.errors import ConfigError
from l2sparse.train import TrainConfig, TrainReport, main, train

SMALL = {
    "image_size": 32,
    "train_size": 64,
    "test_size": 16,
    "batch_size": 8,
    "tasks": ["semseg", "depth", "attributes"],
}


def test_lambda_zero_gives_no_sparsity(tmp_path):
    report = train(TrainConfig(lam=0.0, steps=30, **SMALL), tmp_path / "dense", progress=False).report
    assert report["sparsity"]["group"] == 0.0
    assert report["params"]["compact"] == report["params"]["dense"]


def test_large_lambda_gives_over_half_group_sparsity_and_a_smaller_exact_model(tmp_path):
    trained = train(TrainConfig(lam=2.0, steps=150, **SMALL), tmp_path / "sparse", progress=False)
    report = trained.report
    assert report["sparsity"]["group"] > 0.5
    assert report["params"]["compact"] < report["params"]["dense"]
    assert report["macs"]["compact"] < report["macs"]["dense"]
    assert report["compaction"]["max_abs_diff"] <= 1e-5
    on_disk = json.loads((tmp_path / "sparse" / "report.json").read_text())
    assert set(on_disk) == TrainReport.__required_keys__  # exactly the keys the typed report declares
    assert 0 <= on_disk["sparsity"]["param"] <= 1 and on_disk["sparsity"]["per_layer"]
    assert set(on_disk["metrics"]) == {"semseg", "depth", "attributes"}
    assert {"miou", "pixel_acc"} <= set(on_disk["metrics"]["semseg"])
    assert on_disk["synthetic_data"] is True
    assert on_disk == json.loads(json.dumps(report))
    # the returned model is the trained one: the checkpoint's weights, in eval mode
    saved = load_checkpoint(tmp_path / "sparse" / "checkpoint.pt")["model"]
    assert not trained.model.training
    for k, v in trained.model.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)


def test_uncertainty_weighting_and_adam_run(tmp_path):
    cfg = TrainConfig(lam=0.01, steps=5, weighting="uncertainty", optimizer="adam", lr=1e-3, **SMALL)
    report = train(cfg, tmp_path / "uw", progress=False).report
    log_vars = load_checkpoint(tmp_path / "uw" / "checkpoint.pt")["weighting"]["log_vars"]
    assert log_vars.shape == (3,) and log_vars.abs().sum() > 0  # the task weights were learned
    assert report["metrics"]["depth"]["abs_err"] > 0


def test_an_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    cfg = TrainConfig(lam=0.2, steps=12, ckpt_every=5, **SMALL)
    train(cfg, tmp_path / "straight", progress=False)

    real, calls = train_mod.task_losses, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "task_losses", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 5
    monkeypatch.setattr(train_mod, "task_losses", real)
    train(cfg, tmp_path / "resumed", resume=True, progress=False)

    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_resume_may_extend_steps_but_not_change_the_run(tmp_path):
    first = train(TrainConfig(lam=0.1, steps=4, **SMALL), tmp_path / "x", progress=False).report
    again = train(TrainConfig(lam=0.1, steps=4, **SMALL), tmp_path / "x", resume=True, progress=False).report
    assert again["train_loss_final"] == first["train_loss_final"]  # a finished run resumes to the same report
    longer = train(TrainConfig(lam=0.1, steps=6, **SMALL), tmp_path / "x", resume=True, progress=False).report
    assert load_checkpoint(tmp_path / "x" / "checkpoint.pt")["step"] == 6 and longer["train_time_s"] > 0
    with pytest.raises(CheckpointError, match="saved with different lam, lr"):
        train(TrainConfig(lam=0.2, lr=0.1, steps=6, **SMALL), tmp_path / "x", resume=True, progress=False)


def test_a_finished_run_is_not_overwritten_without_resume(tmp_path):
    train(TrainConfig(lam=0.0, steps=2, **SMALL), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(TrainConfig(lam=0.0, steps=2, **SMALL), tmp_path / "x", progress=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vgg"], "unknown model 'vgg'; valid models: resnet50, small, tiny"),
        (["--tasks", "semseg,albedo"], "unknown task(s) ['albedo'] for dataset 'synthetic'; valid tasks: attributes"),
        (["--split", "mars-default"], "unknown split 'mars-default'; valid splits: celeba-attributes"),
        (["--dataset", "nyuv2"], "data-root: dataset 'nyuv2' reads files; pass --data-root"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'; valid datasets: synthetic"),
        (["--lam", "-0.1"], "lam: expected λ ≥ 0, got -0.1"),
        (["--steps", "0"], "steps: expected a positive integer, got 0"),
        (["--optimizer", "lion"], "optimizer: expected one of sgd, adam, got 'lion'"),
        (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    ],
)
def test_bad_options_are_one_line_errors_with_exit_code_2(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(out), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_an_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["--steps", "1", "--out", str(f), "--quiet"])
    assert exc.value.code == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert f.read_text() == "keep me"


def test_an_undefined_metric_prints_as_null(tmp_path, capsys):
    """Four test images hold no image without a sphere: has_sphere's balanced accuracy is undefined, printed as null
    (strict JSON, as in report.json), never as NaN."""
    main(["--steps", "2", "--train-size", "8", "--test-size", "4", "--image-size", "16", "--batch-size", "4",
          "--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    metrics = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert "NaN" not in out and metrics["has_sphere"]["balanced_accuracy"] is None
    assert metrics["has_sphere"]["accuracy"] == 1.0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["metrics"]["has_sphere"]["auroc"] is None

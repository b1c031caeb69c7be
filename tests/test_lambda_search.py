"""``benchmarks/lambda_search.py``: the grid side and the learned side are run on the same data and judged alike."""

import importlib.util
import statistics
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lambda_search.py"


def load_script():
    spec = importlib.util.spec_from_file_location("lambda_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lambda_search_compares_the_learned_lambda_with_the_grid_best(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    args = ["--grid", "0.01,100", "--trials", "2", "--steps", "4", "--meta-iters", "2", "--lam-init", "0.5"]
    out = load_script().main([*args, "--image-size", "16", "--train-size", "32", "--val-size", "16"])
    printed = capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # the runs' folders are removed
    assert sorted(out["grid"]) == [0.01, 100.0] and all(len(runs) == 2 for runs in out["grid"].values())
    means = {lam: statistics.fmean(r["val_loss"] for r in runs) for lam, runs in out["grid"].items()}
    assert out["best"] == min(means, key=means.get)
    # λ = 100 is far past every group's gradient: the fixed-λ trainer zeroes more groups than at λ = 0.01
    sparsity = {lam: statistics.fmean(r["sparsity"] for r in runs) for lam, runs in out["grid"].items()}
    assert sparsity[100.0] > sparsity[0.01]
    (found,) = out["searches"]
    assert found["lam_init"] == 0.5 and found["learned"] != 0.5  # λ moved
    assert len(found["runs"]) == 2  # and was judged by the same trials as the grid
    assert out["grid_seconds"] > 0 and found["search_seconds"] > 0
    for label in ("grid best", "learned", "meta-sparsity run: λ 0.5 ->", "compute: meta run / grid"):
        assert label in printed


def test_each_initial_lambda_is_its_own_search_and_a_learned_grid_value_does_not_collide(capsys, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script.MetaSparsity, "train", lambda self, progress: None)  # λ stays at λ₀ = a grid value
    args = ["--grid", "0.01,0.1", "--trials", "2", "--steps", "2", "--meta-iters", "1", "--lam-init", "0.01,0.1"]
    out = script.main([*args, "--image-size", "16", "--train-size", "32", "--val-size", "16"])
    assert [f["lam_init"] for f in out["searches"]] == [0.01, 0.1]
    assert [f["learned"] for f in out["searches"]] == pytest.approx([0.01, 0.1])
    for found in out["searches"]:  # trials at a grid λ, trained again in the search's folder: the same seeds agree
        grid = out["grid"][min(out["grid"], key=lambda lam: abs(lam - found["learned"]))]
        assert [r["val_loss"] for r in found["runs"]] == pytest.approx([r["val_loss"] for r in grid])
    assert capsys.readouterr().out.count("meta-sparsity run: λ") == 2

"""Meta-training and adaptation over several processes launched by torchrun (gloo on the CPU) reproduce one process.

Both sides run with one OpenMP thread (torchrun's default for several processes), so the kernels are the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from l2sparse import distributed
from l2sparse.errors import ConfigError

SMALL = ["--train-size", "64", "--quiet"]


def launch(args: list[str], nproc: int, cwd: Path, env: dict | None = None, module: str = "l2sparse.meta_train"):
    """``python -m module args`` for one process, ``torchrun --nproc_per_node nproc -m module args`` for more."""
    if nproc == 1:
        cmd = [sys.executable, "-m", module, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += ["-m", module, *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def finished(out: Path) -> tuple[dict, dict]:
    """The run's checkpoint and report."""
    return torch.load(out / "checkpoint.pt", weights_only=True), json.loads((out / "report.json").read_text())


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    "mode",
    [
        ["--order", "second_order", "--meta-batch", "4", "--budget", "0.3", "--meta-iters", "3"],
        [
            "--order",
            "first_order",
            "--inner-steps",
            "1",
            "--meta-batch",
            "2",
            "--meta-iters",
            "3",
            "--backend",
            "higher",
        ],
    ],
    ids=["second_order-budget", "first_order-higher"],
)
def test_two_processes_follow_the_one_process_trajectory(tmp_path, mode):
    for nproc in (1, 2):
        done = launch([*SMALL, *mode, "--out", f"n{nproc}"], nproc, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    (one, rep1), (two, rep2) = finished(tmp_path / "n1"), finished(tmp_path / "n2")
    assert max_diff(one["model"], two["model"]) <= 1e-5
    assert (one["rho"] - two["rho"]).abs().max() <= 1e-5
    assert rep1["lambda_trajectory"] == pytest.approx(rep2["lambda_trajectory"], abs=1e-5)
    assert rep1["group_sparsity_trajectory"] == rep2["group_sparsity_trajectory"]
    assert rep1["query_loss_final"] == pytest.approx(rep2["query_loss_final"], rel=1e-5)
    assert len(rep1["lambda_trajectory"]) == 3 and len(set(rep1["lambda_trajectory"])) == 3  # λ was learned
    if "--budget" in mode:
        assert rep2["group_sparsity_trajectory"][-1] == pytest.approx(0.3, abs=0.03)


def test_a_distributed_run_resumes_on_the_same_trajectory_with_any_world_size(tmp_path):
    args = [*SMALL, "--meta-batch", "2", "--ckpt-every", "1"]
    assert launch([*args, "--meta-iters", "4", "--out", "whole"], 1, tmp_path).returncode == 0
    steps = [(2, 2, []), (3, 2, ["--resume"]), (4, 1, ["--resume"])]  # two processes, then again, then one
    for iters, nproc, extra in steps:
        done = launch([*args, "--meta-iters", str(iters), "--out", "pieces", *extra], nproc, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    (whole, rep_whole), (pieces, rep_pieces) = finished(tmp_path / "whole"), finished(tmp_path / "pieces")
    assert pieces["iteration"] == 4
    assert max_diff(whole["model"], pieces["model"]) <= 1e-5
    assert rep_whole["lambda_trajectory"] == pytest.approx(rep_pieces["lambda_trajectory"], abs=1e-5)


def test_rank_zero_alone_writes(tmp_path):
    done = launch([*SMALL, "--meta-iters", "2", "--out", "run"], 2, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt",
        "meta_trajectory.png",
        "report.json",
    ]
    assert done.stdout.count("group sparsity") == 1  # one summary, from rank 0


def test_a_meta_batch_that_does_not_divide_is_one_line_from_rank_zero(tmp_path):
    done = launch([*SMALL, "--meta-batch", "3", "--out", "run"], 2, tmp_path)
    assert done.returncode != 0
    line = "python -m l2sparse.meta_train: error: meta-batch: the global meta-batch (3) must divide by the number"
    assert done.stderr.count(line) == 1
    assert not (tmp_path / "run").exists()
    # one rank of such a launch, as torchrun starts it: exit 2 with that line alone
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    rank0 = launch([*SMALL, "--meta-batch", "3", "--out", "run"], 1, tmp_path, env)
    assert rank0.returncode == 2 and rank0.stderr.strip().startswith(line) and len(rank0.stderr.splitlines()) == 1
    rank1 = launch([*SMALL, "--meta-batch", "3", "--out", "run"], 1, tmp_path, {**env, "RANK": "1", "LOCAL_RANK": "1"})
    assert rank1.returncode == 2 and rank1.stderr == ""
    assert not (tmp_path / "run").exists()


def test_cuda_without_enough_gpus_is_one_line_from_rank_zero(tmp_path):
    done = launch([*SMALL, "--device", "cuda", "--out", "run"], 2, tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("python -m l2sparse.meta_train: error:")]
    assert len(errors) == 1 and "device:" in errors[0] and "CUDA" in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_more_local_ranks_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"device: 2 processes per machine need 2 CUDA devices, 1 visible"):
        distributed.local_device("cuda", distributed.World(rank=1, size=2, local_rank=1, local_size=2))
    assert distributed.local_device("cuda", distributed.World(size=2, local_size=1)) == torch.device("cuda", 0)
    assert distributed.local_device("cpu", distributed.World(size=2, local_size=2)) == torch.device("cpu")


ODD_RANK_CODE = """
import os
import time


def trouble(semseg):
    if os.environ.get("RANK") == "1":
        if os.environ.get("TROUBLE") == "hang":
            time.sleep(120)
        raise ValueError("bad shard on rank 1")
    return (semseg == 0).float().mean((1, 2)).unsqueeze(1)


def mse(pred, target):
    return ((pred - target) ** 2).mean()
"""

ODD_RANK_TASK = """
name = "trouble"
dataset = "synthetic"
target = "semseg"
transform = "odd_rank:trouble"
head = "pooled"
out_channels = 1
loss = "odd_rank:mse"
metrics = "regression"
"""


@pytest.fixture
def odd_rank_tasks(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "odd_rank.py").write_text(ODD_RANK_CODE)
    (tmp_path / "tasks" / "splits").mkdir(parents=True)
    (tmp_path / "tasks" / "trouble.toml").write_text(ODD_RANK_TASK)
    (tmp_path / "tasks" / "splits" / "trouble.toml").write_text(
        'name = "trouble"\ndataset = "synthetic"\nseen = ["semseg", "trouble"]\nunseen = ["normals"]\n'
    )
    return ["--tasks-dir", str(tmp_path / "tasks"), "--split", "trouble", "--subset", "2"]


@pytest.mark.parametrize("trouble", ["raise", "hang"])
def test_a_failing_or_silent_rank_stops_the_whole_run(tmp_path, odd_rank_tasks, trouble):
    """A rank that raises stops the launch with its error; one that stops answering makes the others' collectives
    time out (``--dist-timeout``) instead of waiting for ever."""
    env = {"PYTHONPATH": str(tmp_path / "code"), "TROUBLE": trouble}
    started = time.perf_counter()
    done = launch([*SMALL, *odd_rank_tasks, "--dist-timeout", "5", "--out", "run"], 2, tmp_path, env)
    assert time.perf_counter() - started < 90
    assert done.returncode != 0
    if trouble == "raise":  # a bug in the user's transform keeps its traceback, from the rank that met it
        assert "ValueError: bad shard on rank 1" in done.stderr and "Traceback" in done.stderr
    else:
        assert "timed out" in done.stderr.lower() or "timeout" in done.stderr.lower()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_adapt_spreads_its_jobs_and_writes_the_one_process_report(tmp_path):
    args = [*SMALL, "--steps", "4", "--shots", "8", "--seeds", "2", "--meta-iters", "2", "--fixed-steps", "3"]
    args += ["--lam-grid", "0.03,0.1", "--eval-every", "2", "--adapt-size", "32", "--test-size", "16"]
    for nproc in (1, 2):
        done = launch(
            [*args, "--out", f"n{nproc}", "--cache-dir", f"cache{nproc}"], nproc, tmp_path, module="l2sparse.adapt"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count("| meta_sparse |") == 1
    one, two = (json.loads((tmp_path / f"n{n}" / "report.json").read_text()) for n in (1, 2))
    assert one["images"] == two["images"] and one["summary"] == two["summary"]
    for name in ("meta_sparse", "meta_dense", "fixed_lambda", "random"):
        assert one["inits"][name]["results"] == two["inits"][name]["results"]
        assert one["inits"][name]["lambda"] == two["inits"][name]["lambda"]
    # both meta inits were meta-trained by the two processes into rank 0's cache
    assert len(list((tmp_path / "cache2").glob("meta-*/checkpoint.pt"))) == 2


COUNTING_CODE = """
import os


def loss(pred, target):
    with open(os.path.join(os.environ["CALLS_DIR"], f"rank{os.environ.get('RANK', '0')}"), "a") as f:
        f.write("x")
    return ((pred - target) ** 2).mean()
"""

COUNTED_TASK = """
name = "counted"
dataset = "synthetic"
target = "depth"
head = "dense"
out_channels = 1
loss = "counting:loss"
metrics = "regression"
"""


@pytest.mark.parametrize(
    ("module", "vectorise"),
    [("l2sparse.meta_train", False), ("l2sparse.adapt", False), ("l2sparse.adapt", True)],
    ids=["meta_train", "adapt-jobs", "adapt-vectorised"],
)
def test_each_rank_computes_only_its_share(tmp_path, module, vectorise):
    """Inner loops (meta_train) and fine-tuning (adapt: single jobs, or whole tasks when vectorised) are split, not
    repeated: tasks whose loss counts its calls per rank are called half as often on each of two ranks as in one
    process."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "counting.py").write_text(COUNTING_CODE)
    (tmp_path / "tasks" / "splits").mkdir(parents=True)
    (tmp_path / "tasks" / "counted.toml").write_text(COUNTED_TASK)
    (tmp_path / "tasks" / "counted_too.toml").write_text(COUNTED_TASK.replace('"counted"', '"counted_too"'))
    unseen = '["counted", "counted_too"]' if vectorise else '["counted"]'  # vectorised: one task per rank
    (tmp_path / "tasks" / "splits" / "counted.toml").write_text(
        'name = "counted"\ndataset = "synthetic"\nseen = ["counted"]\nunseen = ["normals"]\n'
        if module == "l2sparse.meta_train"
        else f'name = "counted"\ndataset = "synthetic"\nseen = ["depth"]\nunseen = {unseen}\n'
    )
    args = [*SMALL, "--tasks-dir", str(tmp_path / "tasks"), "--split", "counted"]
    if module == "l2sparse.meta_train":
        args += ["--meta-batch", "4", "--meta-iters", "2"]
    else:
        args += ["--inits", "random", "--seeds", "2", "--steps", "3", "--shots", "8", "--adapt-size", "16"]
        args += ["--test-size", "8", "--eval-every", "3", *([] if vectorise else ["--no-vectorise"])]
    calls = {}
    for nproc in (1, 2):
        (tmp_path / f"calls{nproc}").mkdir()
        env = {"PYTHONPATH": str(tmp_path / "code"), "CALLS_DIR": str(tmp_path / f"calls{nproc}")}
        done = launch([*args, "--out", f"n{nproc}"], nproc, tmp_path, env, module)
        assert done.returncode == 0, done.stderr[-2000:]
        calls[nproc] = {f.name: len(f.read_text()) for f in (tmp_path / f"calls{nproc}").iterdir()}
    assert set(calls[2]) == {"rank0", "rank1"}
    # adapt tries each unseen task's loss once per process first
    tried = 0 if module == "l2sparse.meta_train" else 2 if vectorise else 1
    work = {rank: n - tried for rank, n in calls[2].items()}
    assert work["rank0"] == work["rank1"] == (calls[1]["rank0"] - tried) // 2 > 0

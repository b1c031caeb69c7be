"""Bad options, unusable output folders and numerical blow-ups, for every command: exit code 2, one line on stderr
naming the option, the folder or the step, and nothing written."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from subprocess import PIPE

import pytest
import torch

from l2sparse import adapt, lomt, meta_train, train
from l2sparse.checkpoint import CheckpointError, remove_stale_temps, save_checkpoint, save_json
from l2sparse.tasks import __main__ as tasks_cli

COMMANDS = {
    "train": (train.main, ["--steps", "2", "--image-size", "16", "--train-size", "8", "--test-size", "4", "--quiet"]),
    "meta_train": (
        meta_train.main,
        ["--meta-iters", "2", "--image-size", "16", "--train-size", "24", "--support", "4", "--query", "4", "--quiet"],
    ),
    "adapt": (
        adapt.main,
        ["--steps", "2", "--shots", "4", "--seeds", "1", "--image-size", "16", "--adapt-size", "8", "--quiet"],
    ),
    "lomt": (lomt.main, ["--sparse-steps", "2", "--steps", "2", "--trials", "1", "--image-size", "16", "--quiet"]),
}

BAD = [
    ("train", ["--lam", "inf"], "lam: expected a finite number, got inf"),
    ("train", ["--lam", "nan"], "lam: expected a finite number, got nan"),
    ("train", ["--lr", "nan"], "lr: expected a finite number, got nan"),
    ("train", ["--seed", "-7"], "seed: expected an integer ≥ 0, got -7"),
    ("meta_train", ["--inner-lr", "inf"], "inner-lr: expected a finite number, got inf"),
    ("meta_train", ["--outer-lr", "nan"], "outer-lr: expected a finite number, got nan"),
    ("meta_train", ["--budget", "nan"], "budget: expected a finite number, got nan"),
    ("meta_train", ["--budget-ramp", "nan"], "budget-ramp: expected a finite number, got nan"),
    ("meta_train", ["--seed", "-7"], "seed: expected an integer ≥ 0, got -7"),
    ("adapt", ["--lam-grid", "0.1,nan"], "lam-grid: expected a finite number, got nan"),
    ("adapt", ["--lam-grid", "0.1,-1"], "lam-grid: expected finite λ values ≥ 0, got [0.1, -1.0]"),
    ("adapt", ["--budget-macs", "inf"], "budget-macs: expected a finite number, got inf"),
    ("adapt", ["--inits", "random", "--lam-init", "-1"], "lam-init: λ = exp(ρ) must start > 0, got -1.0"),
    ("lomt", ["--threshold", "nan"], "threshold: expected a finite number, got nan"),
    ("lomt", ["--threshold", "1.5"], "threshold: expected a fraction of active groups in [0, 1), got 1.5"),
    ("lomt", ["--epsilon", "-1"], "epsilon: expected a relative loss tolerance ≥ 0, got -1.0"),
    ("lomt", ["--lam", "inf"], "lam: expected a finite number, got inf"),
    ("lomt", ["--seed", "-7"], "seed: expected an integer ≥ 0, got -7"),
    ("lomt", ["--group-mode", "sideways"], "group-mode: expected one of in, out, got 'sideways'"),
    ("lomt", ["--test-size", "0"], "test-size: expected a positive integer, got 0"),
    ("train", ["--seed", str(2**64)], f"seed: expected an integer ≥ 0, got {2**64}"),
    # options that conflict
    ("train", ["--tasks", ""], "tasks: expected comma-separated task names, got ''"),
    ("train", ["--tasks", "depth", "--split", "synthetic-default"], "tasks / split: give the tasks or a split"),
    ("train", ["--data-root", "."], "data-root: dataset 'synthetic' is generated and reads no folder"),
    ("meta_train", ["--data-root", "."], "data-root: dataset 'synthetic' is generated and reads no folder"),
    ("adapt", ["--checkpoint", "x.pt", "--inits", "random"], "checkpoint: it replaces the meta_sparse init"),
]


def run_failing(command: str, args: list[str], tmp_path, capsys) -> str:
    main, base = COMMANDS[command]
    extra = ["--cache-dir", str(tmp_path / "cache")] if command == "adapt" else []
    with pytest.raises(SystemExit) as exc:
        main([*base, *extra, *args] if "--out" in args else [*base, *extra, *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("command", "args", "message"), BAD, ids=[f"{c}{' '.join(a)}" for c, a, _ in BAD])
def test_a_bad_option_is_one_line_and_writes_nothing(tmp_path, capsys, command, args, message):
    err = run_failing(command, args, tmp_path, capsys)
    assert err.startswith(f"python -m l2sparse.{command}: error: {message}"), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_out_folder_that_cannot_be_made_is_refused_before_any_work(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("not a folder")
    err = run_failing(command, ["--out", str(tmp_path / "afile" / "sub")], tmp_path, capsys)
    assert f"out: cannot create {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file" in err
    err = run_failing(command, ["--out", str(tmp_path / "afile")], tmp_path, capsys)
    assert f"out: {tmp_path / 'afile'} exists and is not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_adapt_refuses_an_unusable_cache_folder(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    main, base = COMMANDS["adapt"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--cache-dir", str(tmp_path / "afile" / "c"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "cache-dir: cannot create" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so there is nothing to refuse")
def test_a_read_only_out_folder_is_refused(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    err = run_failing("train", ["--out", str(tmp_path / "ro" / "run")], tmp_path, capsys)
    assert f"out: cannot write into {tmp_path / 'ro'}" in err


def test_tasks_list_names_a_missing_tasks_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        tasks_cli.main(["list", "--tasks-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "nowhere" in err


def test_a_training_blow_up_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    err = run_failing(
        "train", ["--steps", "40", "--lr", "1e6", "--ckpt-every", "1", "--out", str(out)], tmp_path, capsys
    )
    pattern = r"python -m l2sparse\.train: error: train: (.+) at step (\d+) \(not finite\); lower the learning rate"
    found = re.search(pattern + r" \(train's --lr\)", err)
    assert found, err
    step = int(found.group(2))
    if step > 1:  # a checkpoint was written at every step before the blow-up: the last one is named and finite
        assert f"(last good checkpoint: {out / 'checkpoint.pt'})" in err
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert state["step"] == step - 1
        assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    else:
        assert "(no checkpoint was written before it)" in err
    assert not (out / "report.json").exists()


def test_a_meta_training_blow_up_names_the_meta_iteration_and_writes_no_report(tmp_path, capsys):
    main, base = COMMANDS["meta_train"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--inner-lr", "1e6", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert "meta_train:" in err and "at meta-iteration 1" in err and "meta_train's --inner-lr" in err
    assert "no checkpoint was written before it" in err
    assert not (tmp_path / "out" / "report.json").exists() and not (tmp_path / "out" / "checkpoint.pt").exists()


def test_an_adaptation_blow_up_names_the_task_seed_and_step(tmp_path, capsys):
    err = run_failing("adapt", ["--inits", "random", "--lr", "1e30", "--steps", "30"], tmp_path, capsys)
    assert "adapt (normals, seed 0):" in err and "not finite" in err and "lower --lr" in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_file(tmp_path, capsys):
    main, base = COMMANDS["meta_train"]
    main([*base, "--out", str(tmp_path / "meta")])
    path = tmp_path / "meta" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name].fill_(float("nan"))
    torch.save(state, path)
    err = run_failing("adapt", ["--inits", "meta_sparse,random", "--checkpoint", str(path)], tmp_path, capsys)
    assert f"{path}: model weights {name} hold NaN or infinite values" in err
    assert not (tmp_path / "out").exists()


def test_reports_are_strict_json_with_undefined_metrics_as_null(tmp_path):
    save_json({"auroc": float("nan"), "rows": [1.0, float("inf")], "ok": 0.5}, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auroc": None, "rows": [1.0, None], "ok": 0.5}


def test_temporary_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "checkpoint.pt"
    host = socket.gethostname()
    dead = tmp_path / f".checkpoint.pt.999999999@{host}.abc.tmp"  # no process has this id
    live = tmp_path / f".checkpoint.pt.{os.getpid()}@{host}.xyz.tmp"  # a writer that still runs
    elsewhere = tmp_path / ".checkpoint.pt.999999999@another.host.abc.tmp"  # a writer on another machine
    other = tmp_path / f".report.json.999999999@{host}.abc.tmp"  # another target's
    for f in (dead, live, elsewhere, other):
        f.write_bytes(b"partial")
    save_checkpoint({"x": torch.ones(2)}, target)
    assert not dead.exists() and live.exists() and elsewhere.exists() and other.exists()
    assert torch.load(target, weights_only=True)["x"].tolist() == [1.0, 1.0]
    assert remove_stale_temps(tmp_path / "report.json") == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, elsewhere.name])


BROKEN_CODE = {
    "syntax_error.py": "def loss(pred, target)\n    return pred.mean()\n",
    "raises_on_import.py": "raise RuntimeError('needs a GPU cluster')\n",
    "per_pixel.py": "def loss(pred, target):\n    return (pred - target).abs()\n",
    "flat.py": (
        "def flat(semseg):\n    return (semseg == 0).float().mean((1, 2))\n\n\n"
        "def fraction(semseg):\n    return (semseg == 0).float().mean((1, 2)).unsqueeze(1)\n"
    ),
}
TASK = """name = "floor"
dataset = "synthetic"
target = "semseg"
head = "pooled"
out_channels = 1
metrics = "regression"
"""
BROKEN_TASKS = [
    ('loss = "syntax_error:loss"\n', "loss 'syntax_error:loss': importing it raised SyntaxError"),
    ('loss = "raises_on_import:loss"\n', "loss 'raises_on_import:loss': importing it raised RuntimeError"),
    ('loss = "l2sparse.losses:IGNORE_INDEX"\n', "loss 'l2sparse.losses:IGNORE_INDEX' is a int, not a function"),
    ('loss = "bce"\ntransform = "flat:nowhere"\n', "transform 'flat:nowhere' is not importable"),
]


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    for name, text in BROKEN_CODE.items():
        (tmp_path / "code" / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "tasks").mkdir()
    return tmp_path / "tasks"


@pytest.mark.parametrize(("fields", "message"), BROKEN_TASKS, ids=["syntax", "raises", "not-callable", "missing"])
def test_broken_custom_code_is_found_when_the_task_file_is_read(tmp_path, capsys, user_code, fields, message):
    (user_code / "floor.toml").write_text(TASK + fields)
    with pytest.raises(SystemExit) as exc:
        tasks_cli.main(["list", "--tasks-dir", str(user_code)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert f"{user_code / 'floor.toml'}: {message}" in err
    err = run_failing("train", ["--tasks-dir", str(user_code), "--tasks", "depth"], tmp_path, capsys)
    assert f"{user_code / 'floor.toml'}: {message}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            'loss = "per_pixel:loss"\ntransform = "flat:fraction"\n',
            "loss 'per_pixel:loss' returned (4, 1), expected a scalar tensor",
        ),
        ('loss = "bce"\ntransform = "flat:flat"\n', "target shape (4,) does not fit the head's output (4, 1)"),
    ],
    ids=["loss-not-scalar", "transform-shape"],
)
@pytest.mark.parametrize("command", ["train", "meta_train", "adapt"])
def test_custom_code_that_misbehaves_in_training_stops_before_anything_is_written(
    tmp_path, capsys, user_code, fields, message, command
):
    """In adapt the task is unseen: the check runs before any init is trained (the cache stays empty)."""
    (user_code / "floor.toml").write_text(TASK + fields)
    (user_code / "splits").mkdir()
    (user_code / "splits" / "floor.toml").write_text(
        'name = "floor-split"\ndataset = "synthetic"\nseen = ["floor"]\nunseen = ["depth"]\n'
    )
    (user_code / "splits" / "floor-unseen.toml").write_text(
        'name = "floor-unseen"\ndataset = "synthetic"\nseen = ["depth"]\nunseen = ["floor"]\n'
    )
    which = {
        "train": ["--tasks", "floor", "--batch-size", "4"],
        "meta_train": ["--split", "floor-split"],
        "adapt": ["--split", "floor-unseen"],
    }[command]
    err = run_failing(command, ["--tasks-dir", str(user_code), *which], tmp_path, capsys)
    shown = message.replace("(4, 1)", "(2, 1)").replace("(4,)", "(2,)") if command == "adapt" else message
    assert f"task 'floor' ({user_code / 'floor.toml'}): {shown}" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_readable_checkpoint_with_wrong_contents_is_refused_naming_it(tmp_path, capsys):
    main, base = COMMANDS["train"]
    main([*base, "--out", str(tmp_path / "t")])
    path = tmp_path / "t" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    state["rng"] = torch.zeros(3, dtype=torch.uint8)  # not a generator state
    torch.save(state, path)
    err = run_failing("train", ["--resume", "--out", str(tmp_path / "t")], tmp_path, capsys)
    assert f"{path}: its contents do not fit this run (RuntimeError" in err

    main, base = COMMANDS["meta_train"]
    main([*base, "--out", str(tmp_path / "m")])
    path = tmp_path / "m" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["sampler"] = {"generator": "not a state"}
    torch.save(state, path)
    err = run_failing("meta_train", ["--resume", "--meta-iters", "3", "--out", str(tmp_path / "m")], tmp_path, capsys)
    assert f"{path}: its contents do not fit model 'tiny' and this run (TypeError" in err


def test_a_corrupt_cached_report_names_the_file_to_delete(tmp_path):
    cfg = train.TrainConfig(steps=1, image_size=16, train_size=8, test_size=4)
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "report.json").write_text('{"config": ')
    with pytest.raises(CheckpointError, match=r"entry/report.json: not a readable report .*; delete it to retrain"):
        train.train_or_reuse(cfg, tmp_path / "entry", progress=False)


def test_two_processes_filling_one_cache_entry_take_turns(tmp_path):
    """The second process waits for the first and reuses its run (the same report, so the same training time)
    instead of training the same entry a second time beside it."""
    code = (
        "import sys\n"
        "from l2sparse.train import TrainConfig, train_or_reuse\n"
        "cfg = TrainConfig(steps=40, image_size=16, train_size=16, test_size=8)\n"
        "print(train_or_reuse(cfg, sys.argv[1], progress=False).report['train_time_s'])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "entry")], stdout=PIPE, stderr=PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock", "entry"]


def test_a_checkpoint_of_another_backbone_is_refused_before_any_training(tmp_path, capsys):
    main, base = COMMANDS["meta_train"]
    main([*base, "--out", str(tmp_path / "meta")])
    path = tmp_path / "meta" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    name = next(k for k in state["model"] if k.startswith("backbone.") and k.endswith("conv.weight"))
    state["model"][name] = state["model"][name][:, :1]  # one input channel instead of three
    torch.save(state, path)
    err = run_failing("adapt", ["--inits", "meta_sparse,meta_dense", "--checkpoint", str(path)], tmp_path, capsys)
    assert f"{path}: its backbone does not fit model 'tiny'" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()

"""Configuration as data: each command's parser is generated from its config dataclass, keeps the documented option
names, and reads ``--config run.yaml`` with the command line taking precedence."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pytest

from l2sparse import adapt, lomt, meta_train, options, train
from l2sparse.adapt import cli as adapt_cli
from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.inits import meta_config
from l2sparse.lomt import cli as lomt_cli
from l2sparse.meta.config import MetaConfig
from l2sparse.options import DataOptions, option

SHARED = ["--dataset", "--split", "--data-root", "--tasks-dir", "--model", "--image-size", "--train-size", "--device"]
# the option names the commands had before their parsers were generated (docs and scripts use them)
DOCUMENTED = {
    train: [
        *SHARED,
        *("--tasks", "--lam", "--steps", "--lr", "--optimizer", "--weighting", "--batch-size", "--test-size"),
        *("--eval-split", "--group-mode", "--seed", "--ckpt-every", "--out", "--resume", "--quiet"),
    ],
    meta_train: [
        *SHARED,
        *("--backend", "--order", "--inner-steps", "--inner-lr", "--truncate", "--outer-lr", "--lam-lr"),
        *("--lam-init", "--fixed-lambda", "--per-layer", "--inner-threshold", "--init-horizon", "--budget"),
        *("--budget-macs",),
        *("--budget-ramp", "--meta-iters", "--meta-batch", "--support", "--query", "--subset", "--group-mode"),
        *("--seed", "--ckpt-every", "--out", "--resume", "--quiet", "--dist-timeout"),
    ],
    adapt_cli: [
        *SHARED,
        *("--task", "--checkpoint", "--steps", "--shots", "--seeds", "--meta-seeds", "--lr", "--batch-size"),
        *("--adapt-size", "--test-size", "--meta-iters", "--meta-batch", "--lam-init", "--budget", "--budget-macs"),
        *("--budget-ramp", "--lam-grid", "--fixed-steps", "--eval-every", "--inits", "--amp", "--cache-dir"),
        *("--out", "--quiet", "--dist-timeout"),
        "--no-vectorise",  # added since
    ],
    lomt_cli: [
        *SHARED,
        *("--tasks", "--lam", "--group-mode", "--sparse-steps", "--trials", "--threshold", "--rule", "--epsilon"),
        *("--probe-steps", "--attach", "--steps", "--test-size", "--seed", "--out", "--quiet"),
    ],
}


@pytest.mark.parametrize("command", DOCUMENTED, ids=lambda m: m.__name__)
def test_generated_parser_keeps_the_documented_options(command) -> None:
    names = {s for a in command.build_parser()._actions for s in a.option_strings} - {"-h", "--help", "--config"}
    assert names == set(DOCUMENTED[command])


def test_values_convert_like_the_old_parsers() -> None:
    cfg, args = options.parse(
        adapt_cli.build_parser(),
        AdaptConfig,
        ["--lam-grid", "0.01,1", "--inits", "random,meta_dense", "--tasks-dir", "a", "--tasks-dir", "b", "--amp"],
    )
    assert cfg.lam_grid == [0.01, 1.0] and cfg.inits == ["random", "meta_dense"]
    assert cfg.tasks_dir == ["a", "b"] and cfg.amp is True and args.out == "runs/adapt"
    assert AdaptConfig().inits == ["meta_sparse", "meta_dense", "fixed_lambda", "random"]
    mcfg, _ = options.parse(meta_train.build_parser(), MetaConfig, ["--fixed-lambda", "--out", "x"])
    assert mcfg.learn_lambda is False and MetaConfig().learn_lambda is True
    lcfg, _ = options.parse(lomt_cli.build_parser(), lomt.LomtConfig, ["--attach", "depth=layer1", "--attach", "x=y"])
    assert lcfg.attach == {"depth": "layer1", "x": "y"} and lomt.LomtConfig().attach == {}


def test_config_file_sets_options_and_the_command_line_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "steps: 7\nlam-grid: [0.5, 2]\ninits: random\ntasks_dir: extra\namp: true\nout: elsewhere\nbudget: null\n"
    )
    cfg, args = options.parse(adapt_cli.build_parser(), AdaptConfig, ["--config", str(path), "--steps", "9"])
    assert cfg.steps == 9  # the command line wins
    assert cfg.lam_grid == [0.5, 2.0] and cfg.inits == ["random"] and cfg.tasks_dir == ["extra"]
    assert cfg.amp is True and args.out == "elsewhere" and cfg.budget is None
    lomt_file = tmp_path / "lomt.yaml"
    lomt_file.write_text("attach: {}\ntasks-dir: [a, b]\n")
    lcfg, _ = options.parse(lomt_cli.build_parser(), lomt.LomtConfig, ["--config", str(lomt_file)])
    assert lcfg.attach == {} and lcfg.tasks_dir == ["a", "b"]
    lcfg, _ = options.parse(lomt_cli.build_parser(), lomt.LomtConfig, ["--config", str(lomt_file), "--tasks-dir", "c"])
    assert lcfg.tasks_dir == ["c"]  # a repeatable option on the command line replaces the file's list
    meta = tmp_path / "meta.yaml"
    meta.write_text("fixed-lambda: true\nout: runs/m\n")  # a flag by its option name; --out no longer required
    mcfg, margs = options.parse(meta_train.build_parser(), MetaConfig, ["--config", str(meta)])
    assert mcfg.learn_lambda is False and margs.out == "runs/m"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stepz: 3\n", "config: {path}: unknown option 'stepz'; options: adapt-size, amp, "),
        ("steps: many\n", "config: {path}: steps: invalid literal for int() with base 10: 'many'"),
        ("amp: 3\n", "config: {path}: amp: expected true or false, got 3"),
        ("- steps\n", "config: {path}: expected a mapping of option: value, got list"),
        ("steps: [1\n", "config: cannot read {path} as YAML"),
    ],
)
def test_bad_config_file_is_one_line_exit_2(tmp_path, capsys, text, message) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as e:
        options.parse(adapt_cli.build_parser(), AdaptConfig, ["--config", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"python -m l2sparse.adapt: error: {message.format(path=path)}")


def test_missing_config_file_names_it(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        adapt.main(["--config", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and f"config: cannot read {tmp_path / 'absent.yaml'}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_from_a_config_file_equals_the_same_run_from_the_command_line(tmp_path) -> None:
    argv = ["--steps", "2", "--image-size", "16", "--train-size", "8", "--test-size", "4", "--lam", "0.3"]
    path = tmp_path / "run.yaml"
    path.write_text("steps: 2\nimage-size: 16\ntrain-size: 8\ntest-size: 4\nlam: 0.3\nquiet: true\n")
    by_line = train.main([*argv, "--quiet", "--out", str(tmp_path / "a")])
    by_file = train.main(["--config", str(path), "--out", str(tmp_path / "b")])
    saved = json.loads((tmp_path / "b" / "report.json").read_text())
    assert saved["config"] == asdict(train.TrainConfig(steps=2, image_size=16, train_size=8, test_size=4, lam=0.3))
    assert by_file["config"] == by_line["config"] and by_file["metrics"] == by_line["metrics"]


def test_shared_options_pass_from_one_command_to_another() -> None:
    cfg = AdaptConfig(dataset="celeba", split="celeba-faces", data_root="d", model="small", image_size=48, budget=0.4)
    sparse, dense = meta_config(cfg, learn=True, seed=2), meta_config(cfg, learn=False)
    for name in ("dataset", "split", "data_root", "model", "image_size", "train_size", "device"):
        assert getattr(sparse, name) == getattr(cfg, name) == getattr(dense, name)
    assert (sparse.budget, sparse.seed, sparse.learn_lambda) == (0.4, 2, True)
    assert (dense.budget, dense.lam_init, dense.learn_lambda) == (None, 0.0, False)


def test_an_option_without_help_is_refused_when_the_parser_is_built() -> None:
    @dataclass
    class Bad(DataOptions):
        shots: int = option(3)

    with pytest.raises(TypeError, match=r"Bad.shots: an option needs help text"):
        options.parser_for(Bad, "bad", "")

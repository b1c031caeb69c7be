"""Unseen-task adaptation end to end (tiny sizes), masks that keep zero groups at zero, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from l2sparse.adapt import (
    INIT_BASELINES,
    INITS,
    AdaptConfig,
    adapt_task,
    cache_key,
    main,
    meta_config,
    meta_test_sampler,
    register_init,
    zero_group_masks,
)
from l2sparse.adapt.experiment import AdaptReport
from l2sparse.adapt.vectorised import adapt_tasks_together
from l2sparse.data.splits import load_split
from l2sparse.errors import ConfigError
from l2sparse.models import create_model
from l2sparse.sparsity import channel_groups
from l2sparse.tasks import load_registry

TINY = [
    "--meta-iters", "2", "--fixed-steps", "4", "--lam-grid", "0.01,0.1", "--steps", "4", "--seeds", "2",
    "--shots", "6", "--image-size", "16", "--train-size", "24", "--adapt-size", "20", "--test-size", "12",
    "--eval-every", "2", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default command (every unseen task of synthetic-default) at tiny sizes."""
    base = tmp_path_factory.mktemp("adapt")
    report = main([*TINY, "--task", "unseen", "--cache-dir", str(base / "cache"), "--out", str(base / "out")])
    return base, report


def test_report_structure_tables_and_plots(default_run):
    base, _ = default_run
    on_disk = json.loads((base / "out" / "report.json").read_text())
    unseen = [t.name for t in load_registry().unseen("synthetic-default")]
    assert on_disk["tasks"] == unseen and on_disk["synthetic_data"] is True
    assert list(on_disk["inits"]) == list(INITS)
    for r in on_disk["inits"].values():
        assert 0 <= r["sparsity"]["group"] <= 1 and r["sparsity"]["per_layer"]
        assert r["params"]["compact"] <= r["params"]["dense"] and r["macs"]["compact"] <= r["macs"]["dense"]
        assert r["latency_ms"]["compact"] > 0
        for task in unseen:
            res = r["results"][task]
            assert all(len(m["values"]) == 2 for m in res["metrics"].values())  # one value per seed
            assert [s for s, _ in res["curve"]] == [2, 4]
    assert on_disk["inits"]["meta_dense"]["lambda"] == 0.0
    assert on_disk["inits"]["fixed_lambda"]["lambda"] in (0.01, 0.1)
    assert set(on_disk["inits"]["fixed_lambda"]["grid_val_loss"]) == {"0.01", "0.1"}
    md = (base / "out" / "report.md").read_text()
    assert "| meta_sparse |" in md and "normals mean_angle (↓)" in md
    for png in ("adaptation_curves.png", "layer_sparsity.png"):
        assert (base / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_every_init_saw_the_same_images(default_run):
    _, report = default_run
    assert set(report) == AdaptReport.__required_keys__  # exactly the keys the typed report declares
    for task, seeds in report["images"].items():
        for seed, per_init in seeds.items():
            assert set(per_init) == set(INITS), (task, seed)
            first = per_init["meta_sparse"]
            assert all(v == first for v in per_init.values()), (task, seed)
            assert len(first["train"]) == 6 and first["test"] == 12
        assert seeds["0"]["random"]["train"] != seeds["1"]["random"]["train"]  # seeds draw different shots


def test_a_second_run_reuses_the_cached_inits(default_run, tmp_path):
    base, first = default_run
    again = main([*TINY, "--task", "has_cylinder", "--cache-dir", str(base / "cache"), "--out", str(tmp_path)])
    for name in ("meta_sparse", "meta_dense"):
        assert again["inits"][name]["lambda"] == first["inits"][name]["lambda"]
        assert again["inits"][name]["cache"] == first["inits"][name]["cache"]
    assert again["tasks"] == ["has_cylinder"]
    for name in INITS:  # same cached init, images and seeds: the same numbers
        got = again["inits"][name]["results"]["has_cylinder"]["metrics"]
        assert got == first["inits"][name]["results"]["has_cylinder"]["metrics"]


def test_meta_seeds_train_one_init_per_seed(default_run, tmp_path):
    """With ``--meta-seeds 2`` seed 0 adapts the cached seed-0 inits (same numbers as the default run) and seed 1
    its own, newly trained ones."""
    base, first = default_run
    args = [*TINY, "--task", "has_cylinder", "--meta-seeds", "2", "--inits", "meta_sparse,random"]
    again = main([*args, "--cache-dir", str(base / "cache"), "--out", str(tmp_path)])
    sparse = again["inits"]["meta_sparse"]
    assert sparse["meta_seeds"][0]["cache"] == first["inits"]["meta_sparse"]["cache"]
    assert len({m["cache"] for m in sparse["meta_seeds"]}) == 2
    assert len(again["inits"]["random"]["meta_seeds"]) == 2
    for name in ("meta_sparse", "random"):
        got = again["inits"][name]["results"]["has_cylinder"]["metrics"]["loss"]["values"]
        before = first["inits"][name]["results"]["has_cylinder"]["metrics"]["loss"]["values"]
        assert got[0] == before[0] and got[1] != before[1], name


def test_more_meta_seeds_than_seeds_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*TINY, "--meta-seeds", "3", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert e.value.code == 2 and "meta-seeds: expected at most --seeds (2), got 3" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_a_subset_of_inits_trains_only_those(tmp_path):
    report = main([*TINY, "--task", "normals", "--inits", "random,meta_sparse", "--cache-dir", str(tmp_path / "c"),
                   "--out", str(tmp_path / "o")])  # fmt: skip
    assert list(report["inits"]) == ["meta_sparse", "random"]
    entries = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert [e.split("-")[0] for e in entries] == [".meta", "meta"]  # its lock and run; no λ = 0 or fixed-λ runs
    assert "| meta_sparse |" in report["table"] and "meta_dense" not in report["table"]
    assert (tmp_path / "o" / "layer_sparsity.png").stat().st_size > 0


def test_zero_groups_stay_zero_during_adaptation():
    tasks = load_registry().get("synthetic", ["depth"])
    model = create_model("tiny", tasks)
    with torch.no_grad():
        model.backbone.layer2[0].conv1.conv.weight[:, :5] = 0
    masks = zero_group_masks(model, channel_groups(model))
    assert list(masks) == ["backbone.layer2.0.conv1.conv.weight"]
    assert masks["backbone.layer2.0.conv1.conv.weight"][:, :5].eq(0).all()
    assert masks["backbone.layer2.0.conv1.conv.weight"][:, 5:].eq(1).all()


def adapt_depth_from_a_sparse_backbone(**options):
    """A tiny backbone with input-channel groups 0-4 of ``layer2.0.conv1`` and output group 3 of ``layer1.0.conv1``
    (weight row, γ and β) zeroed, adapted to ``depth`` for 5 Adam steps: (backbone before, adapted model, metrics)."""
    tasks = load_registry().get("synthetic", ["depth"])
    model = create_model("tiny", tasks)
    with torch.no_grad():
        model.backbone.layer2[0].conv1.conv.weight[:, :5] = 0
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    cfg = AdaptConfig(steps=5, shots=8, eval_every=5, image_size=16, adapt_size=16, test_size=8, **options)
    episode = meta_test_sampler(cfg, tasks, torch.device("cpu")).task("depth", cfg.shots)
    adapted, metrics, _ = adapt_task(cfg, before, tasks[0], episode, seed=0, device=torch.device("cpu"))
    return before, adapted, metrics


def test_adaptation_keeps_zero_groups_exactly_zero_through_adam():
    before, adapted, _ = adapt_depth_from_a_sparse_backbone()
    after = adapted.backbone.state_dict()
    w = after["layer2.0.conv1.conv.weight"]
    assert w[:, :5].eq(0).all()  # Adam's moments would move them without the masks
    assert not torch.equal(w[:, 5:], before["layer2.0.conv1.conv.weight"][:, 5:])  # the rest did train
    assert not torch.equal(after["stem.0.conv.weight"], before["stem.0.conv.weight"])


def test_adaptation_under_bf16_autocast_runs_and_keeps_the_masks():
    _, adapted, metrics = adapt_depth_from_a_sparse_backbone(amp=True)
    assert adapted.backbone.state_dict()["layer2.0.conv1.conv.weight"][:, :5].eq(0).all()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_a_budget_makes_the_meta_sparse_init_that_sparse_and_its_compact_model_smaller(tmp_path):
    args = [*TINY, "--task", "has_cylinder", "--inits", "meta_sparse,meta_dense", "--budget", "0.5"]
    report = main([*args, "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    sparse, dense = report["inits"]["meta_sparse"], report["inits"]["meta_dense"]
    assert sparse["sparsity"]["group"] == pytest.approx(0.5, abs=0.03)
    assert sparse["params"]["compact"] < 0.8 * sparse["params"]["dense"]
    assert sparse["macs"]["compact"] < 0.8 * sparse["macs"]["dense"]
    assert dense["sparsity"]["group"] == 0 and dense["params"]["compact"] == dense["params"]["dense"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--task", "telekinesis"],
            "task: 'telekinesis' is not a task of split 'synthetic-default'; its tasks: semseg",
        ),
        (["--shots", "21"], "shots: 21 asked for but task 'normals' has 20 training images"),
        (["--split", "celeba-default"], "split: 'celeba-default' belongs to dataset 'celeba', not 'synthetic'"),
        (["--inits", "meta_sparse,pretrained"], "inits: expected a non-empty selection of meta_sparse, meta_dense"),
        (["--eval-every", "0"], "eval-every: expected a positive integer, got 0"),
        (["--fixed-steps", "0"], "fixed-steps: expected a positive integer, got 0"),
        (["--lr", "-1"], "lr: expected a finite number > 0, got -1.0"),
        (["--lam-init", "nan"], "lam-init: expected a finite number, got nan"),
        (["--lam-init", "inf"], "lam-init: expected a finite number, got inf"),
        (["--lam-init", "-1"], "lam-init: λ = exp(ρ) must start > 0, got -1.0"),
        (["--inits", "random", "--budget", "2"], "budget: expected a fraction in [0, 1], got 2.0"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main([*TINY, *args, "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the no-CUDA error cannot happen")
def test_cuda_without_cuda_is_an_error_not_a_fallback(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*TINY, "--device", "cuda", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    assert "no CUDA device is available" in capsys.readouterr().err


def test_a_checkpoint_of_another_split_or_model_is_refused(tmp_path, capsys):
    from l2sparse.meta_train import main as meta_main

    meta_main(["--meta-iters", "1", "--image-size", "16", "--train-size", "24", "--support", "4", "--query", "4",
               "--model", "small", "--quiet", "--out", str(tmp_path / "m")])  # fmt: skip
    with pytest.raises(SystemExit):
        main([*TINY, "--checkpoint", str(tmp_path / "m" / "checkpoint.pt"), "--cache-dir", str(tmp_path / "c"),
              "--out", str(tmp_path / "o")])  # fmt: skip
    assert "trained with model 'small', but this run uses 'tiny'" in capsys.readouterr().err


def test_config_validation_lists_unseen_choice():
    with pytest.raises(ConfigError, match="or 'unseen' for all unseen ones"):
        AdaptConfig(task="x").validate()


def test_importing_the_commands_leaves_the_plotting_backend_alone():
    """Notebooks keep their inline plots: the commands draw on ``Figure`` objects, not through pyplot's backend."""
    code = "import matplotlib; matplotlib.use('svg'); import l2sparse.adapt, l2sparse.lomt, l2sparse.meta_train; "
    code += "print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_the_cache_key_follows_the_task_files(tmp_path):
    """An edited task file (here one of the user's) gives trained inits a new cache folder; the same files the same."""
    (tmp_path / "mine").mkdir()
    task = tmp_path / "mine" / "dark.toml"
    text = 'name = "dark"\ndataset = "synthetic"\ntarget = "depth"\nhead = "dense"\nout_channels = 1\n'
    task.write_text(text + 'loss = "l1_valid"\nmetrics = "depth"\n')
    cfg = AdaptConfig(tasks_dir=[str(tmp_path / "mine")])
    key = cache_key(asdict(meta_config(cfg, learn=True)))
    assert cache_key(asdict(meta_config(cfg, learn=True))) == key
    assert cache_key(asdict(meta_config(AdaptConfig(), learn=True))) != key  # without the folder
    task.write_text(text + 'loss = "cosine"\nmetrics = "depth"\n')
    assert cache_key(asdict(meta_config(cfg, learn=True))) != key


def test_a_registered_init_is_compared_like_the_built_in_ones(tmp_path):
    """``register_init`` adds an init that ``--inits`` accepts, adapted and reported like the others."""

    def halved(cfg, seen, progress, seed):
        state, _ = INIT_BASELINES["random"].build(cfg, seen, progress, seed)
        return {k: v / 2 if v.is_floating_point() else v for k, v in state.items()}, {"lambda": None}

    register_init("halved_random", halved)
    try:
        report = main([*TINY, "--task", "has_cylinder", "--inits", "halved_random,random", "--out", str(tmp_path)])
    finally:
        del INIT_BASELINES["halved_random"]
    assert list(report["inits"]) == ["random", "halved_random"] and "| halved_random |" in report["table"]
    got = report["inits"]["halved_random"]["results"]["has_cylinder"]["metrics"]["loss"]["values"]
    assert got != report["inits"]["random"]["results"]["has_cylinder"]["metrics"]["loss"]["values"]
    with pytest.raises(SystemExit):  # gone from the registry, refused again
        main([*TINY, "--inits", "halved_random", "--out", str(tmp_path / "again")])


@pytest.mark.parametrize("task_name", ["normals", "has_cylinder"])
def test_vectorised_jobs_equal_the_one_by_one_jobs(task_name):
    """Inits × seeds stepped together through vmap give each job what ``adapt_task`` gives it alone (up to float
    rounding: a weight whose gradient is ~0 may take Adam's normalised step of up to lr one way in one path and
    another way in the other, so weights differ by at most steps × lr and the typical weight agrees to 1e-6), zero
    groups of an init included."""
    cfg = AdaptConfig(steps=6, eval_every=3, batch_size=4, image_size=16, lr=1e-3)
    task = load_registry().get("synthetic", [task_name])[0]
    data = load_split(cfg, "train", 14, [task], torch.device("cpu"))
    episodes = [
        {"train": {k: v[s : s + 8] for k, v in data.items()}, "test": {k: v[8:] for k, v in data.items()}}
        for s in (0, 3)
    ]
    backbones = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        backbones.append({k: v.clone() for k, v in create_model("tiny", [task]).backbone.state_dict().items()})
    g = channel_groups(create_model("tiny", [task]))[3]
    backbones[1][g.weight.removeprefix("backbone.")].select(g.dim, 2).zero_()  # one dead group in the second init
    jobs = [(b, e, s) for b in (0, 1) for e, s in ((0, 0), (1, 1))]
    together = adapt_tasks_together(
        cfg, [backbones[b] for b, _, _ in jobs], task, [episodes[e] for _, e, _ in jobs], [s for *_, s in jobs],
        torch.device("cpu"),
    )  # fmt: skip
    for (b, e, s), (model, metrics, curve) in zip(jobs, together, strict=True):
        alone, alone_metrics, alone_curve = adapt_task(cfg, backbones[b], task, episodes[e], s, torch.device("cpu"))
        assert [step for step, _ in curve] == [step for step, _ in alone_curve] == [3, 6]
        for name, value in alone_metrics.items():
            assert metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, b, s)
        diff = torch.cat([(model.state_dict()[k] - v).abs().flatten() for k, v in alone.state_dict().items()])
        assert diff.max() <= cfg.steps * cfg.lr and diff.median() < 1e-6
        weight = model.state_dict()[g.weight].select(g.dim, 2)
        assert (weight.abs().sum().item() == 0) == (b == 1)  # the dead group stayed dead, the live one moved


def test_a_loss_that_vmap_cannot_run_names_the_option(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "branchy.toml").write_text(
        'name = "branchy"\ndataset = "synthetic"\ntarget = "depth"\nhead = "dense"\nout_channels = 1\n'
        'loss = "fixtures:l1_branching_in_python"\nmetrics = "depth"\n'
    )
    (tmp_path / "mine" / "splits").mkdir()
    (tmp_path / "mine" / "splits" / "branchy-split.toml").write_text(
        'name = "branchy-split"\ndataset = "synthetic"\nseen = ["semseg", "depth"]\nunseen = ["branchy"]\n'
    )
    args = [*TINY, "--task", "branchy", "--split", "branchy-split", "--tasks-dir", str(tmp_path / "mine")]
    args += ["--inits", "random", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "vectorise: branchy's loss or head cannot run under torch.func.vmap" in err
    assert "pass --no-vectorise" in err and not (tmp_path / "o" / "report.json").exists()
    report = main([*args[:-1], str(tmp_path / "o2"), "--no-vectorise"])  # the one-by-one path runs it
    assert report["tasks"] == ["branchy"]

"""Adapt sparse backbones to unseen tasks: ``python -m l2sparse.adapt --task unseen``.

Four initialisations of the shared backbone are compared on the same unseen tasks, images, steps and seeds:

* ``meta_sparse``: meta-sparsity with λ learned (``l2sparse.meta``);
* ``meta_dense``: the same meta-training with λ fixed at 0;
* ``fixed_lambda``: the fixed-λ group-sparsity trainer ("Less is More") on the seen tasks, λ chosen from a small
  grid by the seen tasks' mean validation loss (the test split is never looked at);
* ``random``: a fresh random initialisation.

``--inits`` compares a subset instead (``meta_sparse,random`` skips training the two other baselines).

For every unseen task and seed a fresh head is attached to a copy of the backbone, and the whole model is
fine-tuned for ``--steps`` Adam steps on ``--shots`` training images of the task (drawn from ``--adapt-size``
images of the dataset's adaptation split, disjoint from the meta-train and test images). Every group that is zero
in the init stays zero (masked updates: the zero groups are re-zeroed after each step). The adapted model is
evaluated on the task's test images.
Meta-trained and fixed-λ inits are cached under ``--cache-dir`` (default ``$L2SPARSE_CACHE`` or
``~/.cache/l2sparse``) keyed by their configuration, so a second run reuses them.

Under ``torchrun --nproc_per_node N -m l2sparse.adapt ...`` the meta inits are meta-trained over all N processes,
the fixed-λ grid runs on rank 0, and the fine-tuning jobs (init × task × seed) are dealt round-robin over the
ranks; rank 0 gathers them into the same report a single process writes, and alone writes it and the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.utils import benchmark
from tqdm import tqdm

from l2sparse import __version__, distributed
from l2sparse.checkpoint import load_checkpoint, locked, save_figure, save_json, save_text
from l2sparse.cli import ArgumentParser, fail, require_positive
from l2sparse.data import get_dataset, make_dataset, require_root
from l2sparse.data.episodes import MetaTestSampler
from l2sparse.device import DEVICES
from l2sparse.errors import CheckpointError, ConfigError, UserError
from l2sparse.guards import check_finite, check_numbers, require_writable
from l2sparse.meta.metasparsity import MetaConfig, MetaSparsity
from l2sparse.metrics import delta_m
from l2sparse.models import backbone_state, check_model, create_model
from l2sparse.sparsity import channel_groups, compact, count_macs, count_params, sparsity_report
from l2sparse.sparsity.groups import ConvGroups, group_matrix
from l2sparse.tasks import Task, load_registry, task_files_digest
from l2sparse.train import TrainConfig, evaluate, train_or_reuse

INITS = ("meta_sparse", "meta_dense", "fixed_lambda", "random")


@dataclass
class AdaptConfig:
    """Everything that defines an adaptation experiment."""

    task: str = "unseen"
    dataset: str = "synthetic"
    split: str = "synthetic-default"
    data_root: str | None = None
    tasks_dir: list[str] | None = None
    checkpoint: str | None = None
    model: str = "tiny"
    steps: int = 150
    shots: int = 64
    seeds: int = 3
    meta_seeds: int = 1
    lr: float = 1e-3
    batch_size: int = 16
    image_size: int = 32
    train_size: int = 500
    adapt_size: int = 200
    test_size: int = 200
    meta_iters: int = 200
    meta_batch: int = 2
    lam_init: float = 0.1
    budget: float | None = None
    budget_macs: float | None = None
    budget_ramp: float = 0.5
    lam_grid: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3])
    fixed_steps: int = 300
    eval_every: int = 25
    inits: list[str] = field(default_factory=lambda: list(INITS))
    device: str = "auto"
    amp: bool = False
    cache_dir: str | None = None

    def validate(self) -> tuple[list[Task], list[Task]]:
        """Check the options; returns (seen tasks, tasks to adapt to). Raises ``ConfigError`` naming the option."""
        check_numbers(self)
        reg = load_registry(self.tasks_dir)
        split = reg.split_of(self.split, self.dataset)
        if self.task == "unseen":
            targets = reg.unseen(self.split)
        elif self.task in (*split.seen, *split.unseen):
            targets = reg.get(self.dataset, [self.task])
        else:
            raise ConfigError(
                f"task: {self.task!r} is not a task of split {self.split!r}; its tasks: "
                f"{', '.join((*split.seen, *split.unseen))} (or 'unseen' for all unseen ones)"
            )
        check_model(self.model)
        require_root(self.dataset, self.data_root)
        sizes = ("steps", "shots", "seeds", "batch_size", "image_size", "train_size", "adapt_size", "test_size")
        require_positive(self, (*sizes, "meta_seeds", "meta_iters", "fixed_steps", "eval_every"))
        if self.meta_seeds > self.seeds:
            raise ConfigError(f"meta-seeds: expected at most --seeds ({self.seeds}), got {self.meta_seeds}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: expected a finite number > 0, got {self.lr}")
        if self.device not in DEVICES:
            raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.checkpoint is not None and "meta_sparse" not in self.inits:
            raise ConfigError("checkpoint: it replaces the meta_sparse init, but --inits does not include meta_sparse")
        unknown = [i for i in self.inits if i not in INITS]
        if unknown or not self.inits:
            raise ConfigError(f"inits: expected a non-empty selection of {', '.join(INITS)}, got {self.inits}")
        if not self.lam_grid or not all(0 <= lam < float("inf") for lam in self.lam_grid):
            raise ConfigError(f"lam-grid: expected finite λ values ≥ 0, got {self.lam_grid}")
        meta_trained = bool(self.trained_inits() & {"meta_sparse", "meta_dense"})
        # λ₀ and the budget, whatever the inits, before any training; the meta-batch split only if it is used
        meta_config(self, learn=True).validate(None if meta_trained else distributed.World())
        distributed.local_device(self.device, distributed.launched())
        return reg.seen(self.split), targets

    def trained_inits(self) -> set[str]:
        """The inits this run trains into the cache: all but ``random``, and ``meta_sparse`` only without
        ``--checkpoint``."""
        trained = {"meta_dense", "fixed_lambda"} | ({"meta_sparse"} if self.checkpoint is None else set())
        return trained & set(self.inits)

    def cache_root(self) -> Path:
        return Path(self.cache_dir or os.environ.get("L2SPARSE_CACHE") or Path.home() / ".cache" / "l2sparse")


def _key(obj: Mapping) -> str:
    """Cache key of a configuration (with its ``tasks_dir``): the library version and the task files' contents
    are part of it, so an upgrade or an edited task file retrains."""
    stamp = {"l2sparse": __version__, "task_files": task_files_digest(obj["tasks_dir"])}
    return hashlib.sha256(json.dumps({**obj, **stamp}, sort_keys=True).encode()).hexdigest()[:16]


def meta_config(cfg: AdaptConfig, learn: bool, seed: int = 0) -> MetaConfig:
    return MetaConfig(
        dataset=cfg.dataset,
        split=cfg.split,
        data_root=cfg.data_root,
        tasks_dir=cfg.tasks_dir,
        model=cfg.model,
        lam_init=cfg.lam_init if learn else 0.0,
        learn_lambda=learn,
        budget=cfg.budget if learn else None,
        budget_macs=cfg.budget_macs if learn else None,
        budget_ramp=cfg.budget_ramp,
        meta_iters=cfg.meta_iters,
        meta_batch=cfg.meta_batch,
        image_size=cfg.image_size,
        train_size=cfg.train_size,
        seed=seed,
        device=cfg.device,
    )


def meta_init(cfg: AdaptConfig, learn: bool, progress: bool, seed: int = 0) -> tuple[dict[str, Tensor], dict]:
    """Backbone state of a meta-trained init (cached), trained with ``seed``, and its λ."""
    mcfg = meta_config(cfg, learn, seed)
    out = cfg.cache_root() / f"meta-{_key(asdict(mcfg))}"
    with locked(out) if distributed.current().main else contextlib.nullcontext():  # rank 0 speaks for a launch
        trainer = MetaSparsity(mcfg, out, resume=distributed.on_main((out / "checkpoint.pt").exists))
        trainer.train(progress=progress)
    return _backbone_state(trainer.model), {"lambda": trainer.lam.detach().tolist(), "cache": str(out)}


def checkpoint_init(cfg: AdaptConfig, path: str) -> tuple[dict[str, Tensor], dict]:
    """Backbone state from a ``meta_train`` checkpoint, which must match the split and the model."""
    state = load_checkpoint(path, ("config", "model", "rho"))
    saved = state["config"]
    if not (isinstance(saved, dict) and isinstance(state["model"], dict) and torch.is_tensor(state["rho"])):
        raise CheckpointError(f"{path}: not a meta_train checkpoint (config, model or rho of the wrong kind)")
    for key in ("split", "model", "dataset"):
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(
                f"{path}: trained with {key} {saved.get(key)!r}, but this run uses {getattr(cfg, key)!r}"
            )
    backbone = backbone_state(state["model"])
    try:  # the backbone must fit now, not after the other inits have trained
        check_model(cfg.model).backbone().load_state_dict(backbone)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: its backbone does not fit model {cfg.model!r} ({e})") from e
    return backbone, {"lambda": state["rho"].exp().tolist(), "checkpoint": str(path)}


def fixed_lambda_init(
    cfg: AdaptConfig, seen: Sequence[Task], progress: bool, seed: int = 0
) -> tuple[dict[str, Tensor], dict]:
    """The fixed-λ trainer on the seen tasks for every λ of the grid, trained with ``seed``; the lowest mean
    validation loss wins.

    It trains with ``ProxAdam`` at the meta-init's outer learning rate, whose λ is the meta-sparse init's λ (both
    relative to the layer's gradient scale, both on the mean task loss), so the λ columns compare."""
    runs = {}
    for lam in cfg.lam_grid:
        tcfg = TrainConfig(
            dataset=cfg.dataset,
            tasks=[t.name for t in seen],
            data_root=cfg.data_root,
            tasks_dir=cfg.tasks_dir,
            model=cfg.model,
            lam=lam,
            optimizer="adam",
            lr=MetaConfig.outer_lr,
            steps=cfg.fixed_steps,
            image_size=cfg.image_size,
            train_size=cfg.train_size,
            test_size=min(cfg.test_size, 200),
            eval_split="val",
            seed=seed,
            device=cfg.device,
        )
        out = cfg.cache_root() / f"fixed-{_key(asdict(tcfg))}"
        report = train_or_reuse(tcfg, out, progress)
        runs[lam] = (sum(m["loss"] for m in report["metrics"].values()) / len(report["metrics"]), out)
    best = min(runs, key=lambda lam: runs[lam][0])
    state = load_checkpoint(runs[best][1] / "checkpoint.pt", ("model",))["model"]
    return backbone_state(state), {"lambda": best, "grid_val_loss": {str(k): v[0] for k, v in runs.items()}}


def random_init(cfg: AdaptConfig, seen: Sequence[Task], seed: int = 0) -> tuple[dict[str, Tensor], dict]:
    torch.manual_seed(seed)
    return _backbone_state(create_model(cfg.model, seen)), {"lambda": None}


def _backbone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}


def zero_group_masks(model: nn.Module, groups: Sequence[ConvGroups]) -> dict[str, Tensor]:
    """``{parameter name: 0/1 mask}`` that keeps every group that is exactly zero now at zero."""
    params = dict(model.named_parameters())
    masks = {}
    for g in groups:
        dead = (group_matrix(params, g) == 0).all(dim=1)
        if not dead.any():
            continue
        w = params[g.weight]
        shape = [1] * w.ndim
        shape[g.dim] = -1
        masks[g.weight] = (~dead).to(w.dtype).view(shape).expand_as(w).clone()
        for e in g.extras:
            masks[e] = (~dead).to(w.dtype)
    return masks


def adapt_task(
    cfg: AdaptConfig,
    backbone: Mapping[str, Tensor],
    task: Task,
    episode: Mapping,
    seed: int,
    device: torch.device,
) -> tuple[nn.Module, dict[str, float], list[tuple[int, float]]]:
    """Fine-tune a fresh head (and the backbone, zero groups held at zero) on ``episode["train"]``.

    Returns the adapted model, its test metrics and the primary metric every ``eval_every`` steps.
    """
    torch.manual_seed(seed)
    model = create_model(cfg.model, [task]).to(device)
    model.backbone.load_state_dict(backbone)
    groups = channel_groups(model)
    masks = {n: m.to(device) for n, m in zero_group_masks(model, groups).items()}
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    train_b, test_b = episode["train"], episode["test"]
    test_data = {"image": test_b["image"], task.target: test_b[task.name]}
    # the task's target is already selected, merged and transformed: evaluate with an identity view of the task
    plain = dataclasses.replace(task, select=None, lut=None, transform="")
    n = len(train_b["image"])
    g = torch.Generator().manual_seed(seed)
    curve = []
    metric = task.primary_metric
    model.train()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(n, (min(cfg.batch_size, n),), generator=g).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            pred = model(train_b["image"][idx])[task.name]
        loss = task.loss_fn(pred.float(), train_b[task.name][idx])
        check_finite(f"adapt ({task.name}, seed {seed})", step, {"loss": loss}, "lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve.append((step, evaluate(model, [plain], test_data)[task.name][metric]))
    return model, evaluate(model, [plain], test_data)[task.name], curve


@torch.no_grad()
def latency_ms(model: nn.Module, image_size: int, device: torch.device) -> float:
    """Median time of one forward pass on a single image, in milliseconds."""
    model.eval()
    x = torch.rand(1, 3, image_size, image_size, device=device)
    timer = benchmark.Timer("model(x)", globals={"model": model, "x": x})
    return 1e3 * timer.blocked_autorange(min_run_time=0.2).median


def summarize(values: Sequence[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": list(values),
    }


def meta_test_sampler(cfg: AdaptConfig, targets: Sequence[Task], device: torch.device) -> MetaTestSampler:
    """The tasks' training images (``adapt_size`` from the dataset's adaptation split) and test images
    (``test_size``), as ``run`` draws every init's shots from them, on ``device``."""
    needed = {t.target for t in targets}

    def load(split: str, size: int) -> dict[str, Tensor]:
        data = make_dataset(cfg.dataset, split, cfg.data_root, cfg.image_size, size, 0, needed)
        return {k: v.to(device) for k, v in data.tensors().items()}

    return MetaTestSampler(
        load(get_dataset(cfg.dataset).adapt_split, cfg.adapt_size), load("test", cfg.test_size), targets
    )


def run(cfg: AdaptConfig, out: str | Path, progress: bool = True) -> dict:
    """The whole experiment; writes ``report.json``, ``report.md`` and two plots into ``out`` (rank 0 under
    ``torchrun``, which returns the report on every rank)."""
    seen, targets = cfg.validate()
    out = Path(out)
    world = distributed.setup(cfg.device)
    distributed.on_main(lambda: check_folders(cfg, out))  # rank 0 alone writes
    device = distributed.local_device(cfg.device)
    from_checkpoint = (  # fails early
        None if cfg.checkpoint is None else distributed.on_main(lambda: checkpoint_init(cfg, cfg.checkpoint))
    )
    entry = get_dataset(cfg.dataset)
    sampler = meta_test_sampler(cfg, targets, device)
    for t in targets:  # too many --shots, or a task whose loss or transform misbehaves: fail before any training
        try_task(cfg, t, sampler.task(t.name, cfg.shots), device)

    started = time.perf_counter()
    builders = {
        "meta_sparse": lambda k: from_checkpoint or meta_init(cfg, True, progress, k),
        "meta_dense": lambda k: meta_init(cfg, False, progress, k),
        "fixed_lambda": lambda k: distributed.on_main(lambda: fixed_lambda_init(cfg, seen, progress, k)),
        "random": lambda k: random_init(cfg, seen, k),
    }
    # one init per meta seed; adaptation seed s starts from init s mod --meta-seeds
    inits = {name: [builders[name](k) for k in range(cfg.meta_seeds)] for name in INITS if name in cfg.inits}
    jobs = [(name, t.name, seed) for name in inits for t in targets for seed in range(cfg.seeds)]
    by_name = {t.name: t for t in targets}
    done = {}
    for job in tqdm(world.deal(jobs), desc="adapt", disable=not progress or not world.main):
        name, task, seed = job
        measure = task == targets[0].name and seed == 0
        episode = sampler.task(task, cfg.shots, seed)
        backbone = inits[name][seed % len(inits[name])][0]
        done[job] = adapt_job(cfg, backbone, by_name[task], episode, seed, device, measure)
    done = {job: result for part in distributed.all_gather_objects(done) for job, result in part.items()}

    report: dict = {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "synthetic_data": entry.synthetic,
        "tasks": [t.name for t in targets],
        "config": asdict(cfg),
        "images": {},
        "inits": {},
    }
    for t in targets:
        for seed in range(cfg.seeds):
            idx = sampler.task(t.name, cfg.shots, seed)["indices"]
            shown = {"train": idx["train"].tolist(), "test": len(idx["test"])}
            report["images"].setdefault(t.name, {})[str(seed)] = dict.fromkeys(inits, shown)
    for name, per_seed in inits.items():
        reports = [init_sparsity(cfg.model, targets, backbone) for backbone, _ in per_seed]
        result = {**per_seed[0][1], "sparsity": reports[0], "results": {}}
        if len(per_seed) > 1:
            result["meta_seeds"] = [
                {**info, "group_sparsity": sp["group"]} for (_, info), sp in zip(per_seed, reports, strict=True)
            ]
        result.update(done[(name, targets[0].name, 0)]["size"])
        for t in targets:
            runs = [done[(name, t.name, seed)] for seed in range(cfg.seeds)]
            steps = [s for s, _ in runs[0]["curve"]]
            result["results"][t.name] = {
                "metrics": {k: summarize([r["metrics"][k] for r in runs]) for k in runs[0]["metrics"]},
                "curve": [[s, statistics.fmean(r["curve"][i][1] for r in runs)] for i, s in enumerate(steps)],
            }
        report["inits"][name] = result
    report["summary"] = summarize_inits(report, targets)
    report["time_s"] = time.perf_counter() - started
    report["table"] = markdown_table(report, targets)
    report["headline"] = headline(report)
    if world.main:
        write_outputs(report, targets, out)
    return report


def init_sparsity(model: str, targets: Sequence[Task], backbone: Mapping[str, Tensor]) -> dict:
    """``{"group", "param", "per_layer"}`` sparsity of a backbone state (the heads do not count)."""
    probe = create_model(model, targets[:1])
    probe.backbone.load_state_dict(backbone)
    sp = sparsity_report(probe, channel_groups(probe))
    return {k: sp[k] for k in ("group", "param", "per_layer")}


def check_folders(cfg: AdaptConfig, out: Path) -> None:
    """``out`` must be writable, and so must the cache when an init will be trained into it."""
    require_writable(out)
    if cfg.trained_inits():
        where = "cache-dir" if cfg.cache_dir else "cache-dir (default: $L2SPARSE_CACHE or ~/.cache/l2sparse)"
        require_writable(cfg.cache_root(), where)


@torch.no_grad()
def try_task(cfg: AdaptConfig, task: Task, episode: Mapping, device: torch.device) -> None:
    """One loss of a fresh model on two of the task's training images, so that a target that does not fit the head
    or a loss that is not a scalar is an error naming the task file before any init is trained."""
    model = create_model(cfg.model, [task]).to(device).train()
    images = episode["train"]["image"][:2]
    task.loss_fn(model(images)[task.name], episode["train"][task.name][:2])


def adapt_job(
    cfg: AdaptConfig,
    backbone: Mapping[str, Tensor],
    task: Task,
    episode: Mapping,
    seed: int,
    device: torch.device,
    measure: bool,
) -> dict:
    """One fine-tuning job ([`adapt_task`][l2sparse.adapt.adapt_task]) on ``device``: ``{"metrics", "curve"}``, plus
    with ``measure`` the adapted model's ``"size"`` (params, MACs and latency, dense and compacted)."""
    model, metrics, curve = adapt_task(cfg, backbone, task, episode, seed, device)
    result: dict = {"metrics": metrics, "curve": curve}
    if measure:
        small = compact(model.eval())
        size = (3, cfg.image_size, cfg.image_size)
        result["size"] = {
            "params": {"dense": count_params(model), "compact": count_params(small)},
            "macs": {"dense": count_macs(model, size), "compact": count_macs(small, size)},
            "latency_ms": {
                "dense": latency_ms(model, cfg.image_size, device),
                "compact": latency_ms(small, cfg.image_size, device),
            },
        }
    return result


def summarize_inits(report: dict, targets: Sequence[Task]) -> dict:
    """Per init, over the unseen tasks' primary metrics, seed by seed (the seeds share their images across inits):
    ``delta_m`` (LibMTL's Δm in percent against the ``baseline`` init, ``random`` when it was run, else the first;
    positive = better) and, when every task has the same primary metric, ``mean_primary``; each as mean ± std over
    seeds. ``{"baseline": name, "metric": name or None, "inits": {init: {...}}}``."""
    names = list(report["inits"])
    baseline = "random" if "random" in names else names[0]
    metric = targets[0].primary_metric if len({t.primary_metric for t in targets}) == 1 else None
    hib = {t.name: {t.primary_metric: t.higher_is_better[t.primary_metric]} for t in targets}
    seeds = len(report["inits"][baseline]["results"][targets[0].name]["metrics"][targets[0].primary_metric]["values"])

    def values(init: str, seed: int) -> dict[str, dict[str, float]]:
        res = report["inits"][init]["results"]
        return {t.name: {t.primary_metric: res[t.name]["metrics"][t.primary_metric]["values"][seed]} for t in targets}

    out: dict = {"baseline": baseline, "metric": metric, "inits": {}}
    for name in names:
        per_seed = [values(name, s) for s in range(seeds)]
        entry = {"delta_m": summarize([delta_m(v, values(baseline, s), hib) for s, v in enumerate(per_seed)])}
        if metric is not None:
            entry["mean_primary"] = summarize([statistics.fmean(m[metric] for m in v.values()) for v in per_seed])
        out["inits"][name] = entry
    return out


def markdown_table(report: dict, targets: Sequence[Task]) -> str:
    """Rows: inits; columns: each task's primary metric (mean ± std over seeds), their mean (when the tasks share
    one primary metric), Δm against the baseline init, sparsity, size, latency."""
    summary = report["summary"]
    heads = [f"{t.name} {t.primary_metric} ({'↑' if t.higher_is_better[t.primary_metric] else '↓'})" for t in targets]
    if summary["metric"] is not None:
        heads.append(f"mean {summary['metric']}")
    heads.append(f"Δm vs {summary['baseline']} (%)")
    lines = [
        "| init | λ | " + " | ".join(heads) + " | group sparsity | params (compact) | MACs (compact) | latency ms |",
        "|---" * (len(heads) + 6) + "|",
    ]
    for name, r in report["inits"].items():
        lam = r["lambda"]
        lam_s = "–" if lam is None else f"{lam:.3g}" if isinstance(lam, float) else f"{max(lam):.3g} (max)"
        cells = []
        for t in targets:
            m = r["results"][t.name]["metrics"][t.primary_metric]
            cells.append(f"{m['mean']:.3f} ± {m['std']:.3f}")
        s = summary["inits"][name]
        if "mean_primary" in s:
            cells.append(f"{s['mean_primary']['mean']:.3f} ± {s['mean_primary']['std']:.3f}")
        cells.append(f"{s['delta_m']['mean']:+.1f} ± {s['delta_m']['std']:.1f}")
        lines.append(
            f"| {name} | {lam_s} | " + " | ".join(cells) + f" | {r['sparsity']['group']:.1%} | "
            f"{r['params']['compact']} | {r['macs']['compact'] / 1e6:.2f}M | {r['latency_ms']['compact']:.2f} |"
        )
    return "\n".join(lines)


def headline(report: dict) -> str:
    """One line on what the table shows: each init's Δm (mean ± std over seeds) and its compact size."""
    summary = report["summary"]
    parts = []
    for name, r in report["inits"].items():
        if name == summary["baseline"]:
            continue
        d = summary["inits"][name]["delta_m"]
        parts.append(
            f"{name} {d['mean']:+.1f} ± {d['std']:.1f}% ({r['sparsity']['group']:.0%} groups zero, "
            f"{r['params']['compact'] / r['params']['dense']:.0%} of the parameters)"
        )
    return f"Δm vs {summary['baseline']} over the unseen tasks: " + "; ".join(parts)


def write_outputs(report: dict, targets: Sequence[Task], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4 * len(targets), 3.2))
    axes = fig.subplots(1, len(targets), squeeze=False)
    for ax, t in zip(axes[0], targets, strict=True):
        for name, r in report["inits"].items():
            curve = r["results"][t.name]["curve"]
            ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", ms=3, label=name)
        ax.set(title=t.name, xlabel="adaptation step", ylabel=t.primary_metric)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "adaptation_curves.png")
    layers = list(next(iter(report["inits"].values()))["sparsity"]["per_layer"])
    fig = Figure(figsize=(max(6, 0.5 * len(layers)), 3.5))
    ax = fig.subplots()
    width = 0.8 / len(report["inits"])
    for i, (name, r) in enumerate(report["inits"].items()):
        values = [r["sparsity"]["per_layer"][la]["group_sparsity"] for la in layers]
        ax.bar([j + i * width for j in range(len(layers))], values, width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))])
    ax.set_xticklabels([la.removeprefix("backbone.").removesuffix(".conv") for la in layers], rotation=60, fontsize=7)
    ax.set(ylabel="group sparsity", ylim=(0, 1), title="backbone group sparsity per layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "layer_sparsity.png")
    save_text(
        f"# Unseen-task adaptation ({report['dataset']}, split {report['split']}"
        f"{', synthetic data' if report['synthetic_data'] else ''})\n\n{report['table']}\n\n{report['headline']}\n",
        out / "report.md",
    )
    save_json(report, out / "report.json")


def build_parser() -> ArgumentParser:
    d = AdaptConfig()
    p = ArgumentParser(prog="python -m l2sparse.adapt", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--task", default=d.task, help="'unseen' (every unseen task of the split) or one task name")
    add("--split", default=d.split, help="split (default: %(default)s)")
    add("--dataset", default=d.dataset, help="dataset (default: %(default)s)")
    add("--data-root", default=None, help="dataset folder (real datasets only)")
    add("--tasks-dir", action="append", default=None, help="extra folder of task files (repeatable)")
    add("--checkpoint", default=None, help="meta_train checkpoint for the meta-sparse init (else trained, cached)")
    add("--model", default=d.model, help="model (default: %(default)s)")
    add("--steps", type=int, default=d.steps, help="adaptation steps (default: %(default)s)")
    add("--shots", type=int, default=d.shots, help="training images of the new task (default: %(default)s)")
    add("--seeds", type=int, default=d.seeds, help="seeds per task and init (default: %(default)s)")
    add(
        "--meta-seeds",
        type=int,
        default=d.meta_seeds,
        help="trained inits per init, each with its own seed; adaptation seed s starts from init s mod this, so the"
        " spread over seeds includes the spread of training (default: %(default)s)",
    )
    add("--lr", type=float, default=d.lr, help="adaptation Adam lr (default: %(default)s)")
    add("--batch-size", type=int, default=d.batch_size, help="adaptation batch (default: %(default)s)")
    add("--image-size", type=int, default=d.image_size, help="square image side (default: %(default)s)")
    add("--train-size", type=int, default=d.train_size, help="meta-train images (default: %(default)s)")
    add("--adapt-size", type=int, default=d.adapt_size, help="images the shots are drawn from (default: %(default)s)")
    add("--test-size", type=int, default=d.test_size, help="test images per task (default: %(default)s)")
    add(
        "--meta-iters", type=int, default=d.meta_iters, help="meta-iterations of both meta inits (default: %(default)s)"
    )
    add(
        "--meta-batch",
        type=int,
        default=d.meta_batch,
        help="episodes per meta-iteration; divides by the processes under torchrun (default: %(default)s)",
    )
    add("--lam-init", type=float, default=d.lam_init, help="initial λ of meta-sparsity (default: %(default)s)")
    add("--budget", type=float, default=None, help="target group sparsity in [0, 1] of the meta-sparse init")
    add("--budget-macs", type=float, default=None, help="target fraction in [0, 1] of the dense backbone's MACs")
    add("--budget-ramp", type=float, default=d.budget_ramp, help="fraction of meta-iters to reach the budget")
    add("--lam-grid", default=",".join(map(str, d.lam_grid)), help="fixed-λ grid (default: %(default)s)")
    add("--fixed-steps", type=int, default=d.fixed_steps, help="fixed-λ training steps (default: %(default)s)")
    add("--eval-every", type=int, default=d.eval_every, help="steps between curve points (default: %(default)s)")
    add("--inits", default=",".join(d.inits), help="inits to compare (default: %(default)s)")
    add("--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)")
    add("--amp", action="store_true", help="bf16 autocast for adaptation (for CUDA)")
    add(
        "--cache-dir",
        default=None,
        help="where trained inits are cached (default: $L2SPARSE_CACHE or ~/.cache/l2sparse)",
    )
    add("--out", default="runs/adapt", help="output folder (default: %(default)s)")
    add("--quiet", action="store_true", help="no progress bars")
    add(
        "--dist-timeout",
        type=float,
        default=distributed.DEFAULT_TIMEOUT_S,
        help="under torchrun: seconds a collective waits for the other ranks (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        grid = [float(v) for v in args.lam_grid.split(",")]
    except ValueError:
        fail(parser.prog, f"lam-grid: expected comma-separated numbers, got {args.lam_grid!r}")
    values = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "lam_grid", "inits", "dist_timeout")}
    cfg = AdaptConfig(**values, lam_grid=grid, inits=args.inits.split(","))
    try:
        cfg.validate()  # before joining the process group: a bad option stops every rank alike, at once
        distributed.setup(cfg.device, args.dist_timeout)
        report = run(cfg, args.out, progress=not args.quiet)
    except UserError as e:
        fail(parser.prog, e)
    if not distributed.current().main:
        distributed.teardown()
        return report
    print(report["table"])
    print(report["headline"])
    print(f"report: {Path(args.out) / 'report.json'}")
    distributed.teardown()
    return report


if __name__ == "__main__":
    record(main)()

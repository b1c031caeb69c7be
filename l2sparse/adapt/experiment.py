"""The whole adaptation experiment: build every init, deal the fine-tuning jobs, gather them into the report."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypedDict

import torch
from tqdm import tqdm

from l2sparse import distributed
from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.finetune import adapt_job, job_result, meta_test_sampler, try_task
from l2sparse.adapt.inits import INIT_BASELINES, checkpoint_init
from l2sparse.adapt.report import headline, init_sparsity, markdown_table, summarize, summarize_inits, write_outputs
from l2sparse.adapt.vectorised import adapt_tasks_together
from l2sparse.data import get_dataset
from l2sparse.data.episodes import MetaTestSampler
from l2sparse.errors import ConfigError
from l2sparse.guards import require_writable
from l2sparse.tasks import Task


class AdaptReport(TypedDict):
    """``report.json`` of an adaptation experiment."""

    dataset: str
    split: str
    synthetic_data: bool
    tasks: list[str]  # the tasks adapted to
    config: dict[str, Any]
    images: dict[str, dict[str, dict[str, Any]]]  # task -> seed -> init -> the shots' indices, the test count
    inits: dict[str, dict[str, Any]]  # init -> λ, sparsity, size, latency, per-task metrics (mean ± std), curves
    summary: dict[str, Any]  # the primary metric, the baseline init, Δm and the mean primary metric per init
    time_s: float
    table: str
    headline: str


def run(cfg: AdaptConfig, out: str | Path, progress: bool = True) -> AdaptReport:
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
    # one init per meta seed; adaptation seed s starts from init s mod --meta-seeds
    inits = {
        name: [
            from_checkpoint if name == "meta_sparse" and from_checkpoint else baseline.build(cfg, seen, progress, k)
            for k in range(cfg.meta_seeds)
        ]
        for name, baseline in INIT_BASELINES.items()
        if name in cfg.inits
    }
    done = {}
    bar = {"desc": "adapt", "disable": not progress or not world.main}
    if cfg.vectorise:  # one vmap-ed run per task, tasks dealt over ranks: the same groups whatever the world size
        for task in tqdm(world.deal(targets), **bar):
            done.update(adapt_together(cfg, inits, task, sampler, device, targets[0]))
    else:
        jobs = [(name, t, seed) for name in inits for t in targets for seed in range(cfg.seeds)]
        for name, task, seed in tqdm(world.deal(jobs), **bar):
            measure = task.name == targets[0].name and seed == 0
            episode = sampler.task(task.name, cfg.shots, seed)
            backbone = inits[name][seed % len(inits[name])][0]
            done[(name, task.name, seed)] = adapt_job(cfg, backbone, task, episode, seed, device, measure)
    done = {job: result for part in distributed.all_gather_objects(done) for job, result in part.items()}

    report: AdaptReport = {
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


def adapt_together(
    cfg: AdaptConfig, inits: dict, task: Task, sampler: MetaTestSampler, device: torch.device, measured: Task
) -> dict:
    """Every init × seed job of ``task`` at once
    ([`adapt_tasks_together`][l2sparse.adapt.vectorised.adapt_tasks_together]): ``{(init, task name, seed): job
    result}``; the size is measured on ``measured``."""
    jobs = [(name, seed) for name in inits for seed in range(cfg.seeds)]
    episodes = {seed: sampler.task(task.name, cfg.shots, seed) for seed in range(cfg.seeds)}
    backbones = [inits[name][seed % len(inits[name])][0] for name, seed in jobs]
    try:
        results = adapt_tasks_together(
            cfg, backbones, task, [episodes[s] for _, s in jobs], [s for _, s in jobs], device
        )
    except RuntimeError as e:
        if "vmap" not in str(e):
            raise
        raise ConfigError(
            f"vectorise: {task.name}'s loss or head cannot run under torch.func.vmap ({' '.join(str(e).split())}); "
            "pass --no-vectorise"
        ) from e
    return {
        (name, task.name, seed): job_result(cfg, *result, device, task.name == measured.name and seed == 0)
        for (name, seed), result in zip(jobs, results, strict=True)
    }


def check_folders(cfg: AdaptConfig, out: Path) -> None:
    """``out`` must be writable, and so must the cache when an init will be trained into it."""
    require_writable(out)
    if cfg.trained_inits():
        where = "cache-dir" if cfg.cache_dir else "cache-dir (default: $L2SPARSE_CACHE or ~/.cache/l2sparse)"
        require_writable(cfg.cache_root(), where)

"""The LOMT pipeline: sparse runs, activity, attachment, and the LOMT model against the plain one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypedDict

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from l2sparse.checkpoint import save_figure
from l2sparse.data import get_dataset
from l2sparse.guards import require_writable
from l2sparse.latency import latency_ms
from l2sparse.lomt.activity import active_layers, activity_from_states
from l2sparse.lomt.config import LomtConfig
from l2sparse.lomt.rules import RULES, RuleInput
from l2sparse.models import MODELS, MultiTaskModel
from l2sparse.reporting import markdown_table, write_report
from l2sparse.sparsity import count_macs, count_params
from l2sparse.train import train_or_reuse


def _cost(c: dict) -> list[str]:
    """MACs and latency of the LOMT and the plain model on one task set."""
    macs = [f"{c[name]['macs'] / 1e6:.2f}M" for name in ("lomt", "plain")]
    return [*macs, *(f"{c[name]['latency_ms']:.2f}" for name in ("lomt", "plain"))]


def _cell(value: float | None) -> str:
    """A metric for the table; undefined (NaN, or null in a reused report) shows as –."""
    return "–" if value is None or value != value else f"{value:.3f}"


class LomtReport(TypedDict):
    """``report.json`` of a LOMT run."""

    dataset: str
    split: str
    synthetic_data: bool
    config: dict[str, Any]
    layers: list[str]
    activity: dict[str, list[dict[str, float]]]  # task -> trial -> layer -> fraction of active groups
    active: dict[str, dict[str, bool]]  # task -> layer -> active in every trial
    attach: dict[str, str]  # task -> the layer its head attaches at
    probe_val_loss: dict[str, dict[str, float]]  # task -> layer -> probe loss (probe rule only)
    metrics: dict[str, dict[str, dict[str, float]]]  # lomt | plain -> task -> metric -> value
    params: dict[str, int]
    task_sets: dict[str, dict[str, dict[str, float]]]  # task set -> lomt | plain -> MACs, latency
    table: str


def run(cfg: LomtConfig, out: str | Path, progress: bool = True) -> LomtReport:
    """The whole pipeline; writes ``report.json``, ``report.md`` and ``activity.png`` into ``out``."""
    tasks = cfg.validate()
    out = Path(out)
    require_writable(out)
    layers = MODELS[cfg.model].backbone().layer_names
    states: dict[str, list] = {}
    for task in tasks:
        for trial in range(cfg.trials):
            tcfg = cfg.train_config(
                [task], lam=cfg.lam, steps=cfg.sparse_steps, group_mode=cfg.group_mode, seed=cfg.seed + trial
            )
            trained = train_or_reuse(tcfg, out / "sparse" / task.name / f"trial{trial}", progress)
            states.setdefault(task.name, []).append(trained.model.cpu().state_dict())
    activity = activity_from_states(cfg.model, tasks, states)
    active = {t: active_layers(trials, cfg.threshold) for t, trials in activity.items()}
    attach, probes = {}, {}
    for task in tasks:
        if task.name in cfg.attach:
            attach[task.name] = cfg.attach[task.name]
            continue
        attach[task.name], losses = RULES[cfg.rule](RuleInput(cfg, task, layers, active[task.name], out, progress))
        if losses is not None:
            probes[task.name] = losses

    models = {}
    reports = {}
    for name, where in (("lomt", attach), ("plain", {})):
        tcfg = cfg.train_config(tasks, lam=0.0, steps=cfg.steps, attach=where or None)
        trained = train_or_reuse(tcfg, out / name, progress)
        reports[name], models[name] = trained.report, trained.model.cpu()

    size = (3, cfg.image_size, cfg.image_size)
    task_sets = [[t.name] for t in tasks] + [[t.name for t in tasks]]
    cost = {}
    for ts in task_sets:
        key = "+".join(ts)
        cost[key] = {}
        for name, model in models.items():
            cost[key][name] = {
                "macs": count_macs(model, size, tasks=ts),
                "latency_ms": latency_ms(_TaskSetView(model, ts), cfg.image_size, torch.device("cpu")),
            }
    report: LomtReport = {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "synthetic_data": get_dataset(cfg.dataset).synthetic,
        "config": asdict(cfg),
        "layers": layers,
        "activity": activity,
        "active": active,
        "attach": attach,
        "probe_val_loss": probes,
        "metrics": {name: r["metrics"] for name, r in reports.items()},
        "params": {name: count_params(m) for name, m in models.items()},
        "task_sets": cost,
    }
    write_outputs(report, out)
    return report


class _TaskSetView(torch.nn.Module):
    """A model restricted to one task set, so latency is timed for exactly that forward pass."""

    def __init__(self, model: MultiTaskModel, tasks: Sequence[str]) -> None:
        super().__init__()
        self.model, self.tasks = model, list(tasks)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.model(x, self.tasks)


def write_outputs(report: LomtReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tasks, layers = list(report["activity"]), report["layers"]
    matrix = [[min(trial[layer] for trial in report["activity"][t]) for layer in layers] for t in tasks]
    fig = Figure(figsize=(1.2 * len(layers) + 2, 0.45 * len(tasks) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(tasks)), tasks)
    for i, t in enumerate(tasks):
        j = layers.index(report["attach"][t])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        for k in range(len(layers)):
            ax.text(k, i, f"{matrix[i][k]:.2f}", ha="center", va="center", fontsize=7, color="white")
    ax.set_title("active groups per layer (min over trials)\nred: chosen attachment", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    save_figure(fig, out / "activity.png")
    rows = []
    for t in tasks:
        metric = next(iter(report["metrics"]["lomt"][t]))
        c = report["task_sets"][t]
        scores = [_cell(report["metrics"][name][t][metric]) for name in ("lomt", "plain")]
        rows.append([t, report["attach"][t], metric, *scores, *_cost(c)])
    rows.append(["all tasks", "", "", "", "", *_cost(report["task_sets"]["+".join(tasks)])])
    header = ["task", "layer", "metric", "LOMT", "plain MTL", "MACs LOMT", "MACs plain", "ms LOMT", "ms plain"]
    report["table"] = markdown_table(header, rows)
    write_report(report, f"LOMT vs plain multi-task ({report['dataset']}, {report['split']})", out)

"""A meta-sparsity run's report: the typed ``report.json`` and the λ / sparsity trajectory plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypedDict

from matplotlib.figure import Figure

from l2sparse.checkpoint import save_figure
from l2sparse.data import get_dataset
from l2sparse.meta.metasparsity import MetaSparsity
from l2sparse.reporting import layer_label
from l2sparse.sparsity import SizeReport, compaction_summary


def plot_trajectory(log: list[dict], layers: Sequence[str], path: Path) -> None:
    """λ (log scale; one line per layer with per-layer λ), group sparsity, and per-layer group sparsity as a heat
    map (layers × meta-iterations) against the meta-iteration."""
    its = [e["iteration"] for e in log]
    fig = Figure(figsize=(15, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    lams = [e["lambda"] if isinstance(e["lambda"], list) else [e["lambda"]] for e in log]
    for i in range(len(lams[0])):
        ax1.plot(its, [v[i] for v in lams], lw=1)
    ax1.set(xlabel="meta-iteration", ylabel="λ", yscale="log", title="λ (learned; × e^ν with a budget)")
    ax2.plot(its, [e["group_sparsity"] for e in log], color="tab:red", label="group sparsity")
    if "budget_measured" in log[0]:
        ax2.plot(its, [e["budget_measured"] for e in log], color="tab:gray", lw=1, label="budget measure")
        ax2.legend(fontsize=7)
    ax2.set(xlabel="meta-iteration", ylim=(0, 1), title="meta-init size")
    grid = [[e["layer_sparsity"][j] for e in log] for j in range(len(layers))]
    image = ax3.imshow(
        grid,
        aspect="auto",
        vmin=0,
        vmax=1,
        cmap="magma",
        interpolation="nearest",
        extent=(its[0] - 0.5, its[-1] + 0.5, len(layers) - 0.5, -0.5),
    )
    ax3.set_yticks(range(len(layers)))
    ax3.set_yticklabels([layer_label(la) for la in layers], fontsize=6)
    ax3.set(xlabel="meta-iteration", title="group sparsity per layer")
    fig.colorbar(image, ax=ax3)
    fig.tight_layout()
    save_figure(fig, path)


class MetaReport(SizeReport, TypedDict("_Lambda", {"lambda": float | list[float]})):
    """``report.json`` of a meta-sparsity run (``lambda``: the final effective λ, one per layer with
    ``--per-layer``); the trajectories hold one entry per meta-iteration."""

    dataset: str
    split: str
    synthetic_data: bool
    model: str
    tasks: list[str]
    backend: str
    order: str
    lambda_init: float
    lambda_final: float | list[float]
    lambda_learned: float | list[float]  # exp(ρ), before a budget's multiplier
    lambda_trajectory: list
    group_sparsity_trajectory: list[float]
    layer_sparsity_trajectory: dict[str, list[float]]
    budget: dict[str, Any] | None
    query_loss_final: dict[str, float]
    meta_iterations: int
    train_time_s: float
    config: dict[str, Any]


def report(trainer: MetaSparsity) -> MetaReport:
    """The run's report: the fixed-λ trainer's sparsity/params/macs keys plus the λ trajectory."""
    cfg, log = trainer.cfg, trainer.log
    tail = log[-10:]
    names = [t.name for t in trainer.tasks]
    query = {n: [e["query_loss"][n] for e in tail if n in e["query_loss"]] for n in names}
    return {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "synthetic_data": get_dataset(cfg.dataset).synthetic,
        "model": cfg.model,
        "tasks": [t.name for t in trainer.tasks],
        "backend": cfg.backend,
        "order": cfg.order,
        "lambda": trainer.lam.detach().tolist(),
        "lambda_init": cfg.lam_init,
        "lambda_final": trainer.lam.detach().tolist(),
        "lambda_learned": trainer.rho.detach().exp().tolist(),
        "lambda_trajectory": [e["lambda"] for e in log],
        "group_sparsity_trajectory": [e["group_sparsity"] for e in log],
        "layer_sparsity_trajectory": {
            g.layer: [e["layer_sparsity"][j] for e in log] for j, g in enumerate(trainer.groups)
        },
        "budget": None
        if trainer.budget is None
        else {
            "kind": trainer.budget.kind,
            "target": trainer.budget.target,
            "measured_final": log[-1]["budget_measured"],
            "nu_final": trainer.nu,
            "target_trajectory": [e["budget_target"] for e in log],
            "measured_trajectory": [e["budget_measured"] for e in log],
        },
        "query_loss_final": {n: sum(v) / len(v) for n, v in query.items() if v},
        "meta_iterations": trainer.iteration,
        "train_time_s": trainer.elapsed,
        "config": asdict(cfg),
        **compaction_summary(trainer.model, trainer.groups, trainer.data["image"][:8], cfg.image_size),
    }

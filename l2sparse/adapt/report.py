"""``adapt``'s report: per init the sparsity, the metrics as mean ± std over seeds, Δm against a baseline init,
the markdown table, a one-line headline and the plots."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor

from l2sparse.checkpoint import save_figure
from l2sparse.metrics import delta_m
from l2sparse.models import create_model
from l2sparse.reporting import layer_label, write_report
from l2sparse.reporting import markdown_table as table
from l2sparse.sparsity import channel_groups, sparsity_report
from l2sparse.tasks import Task


def summarize(values: Sequence[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": list(values),
    }


def init_sparsity(model: str, targets: Sequence[Task], backbone: Mapping[str, Tensor]) -> dict:
    """``{"group", "param", "per_layer"}`` sparsity of a backbone state (the heads do not count)."""
    probe = create_model(model, targets[:1])
    probe.backbone.load_state_dict(backbone)
    sp = sparsity_report(probe, channel_groups(probe))
    return {k: sp[k] for k in ("group", "param", "per_layer")}


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
    header = ["init", "λ", *heads, "group sparsity", "params (compact)", "MACs (compact)", "latency ms"]
    rows = []
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
        size = [f"{r['sparsity']['group']:.1%}", r["params"]["compact"], f"{r['macs']['compact'] / 1e6:.2f}M"]
        rows.append([name, lam_s, *cells, *size, f"{r['latency_ms']['compact']:.2f}"])
    return table(header, rows)


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
    ax.set_xticklabels([layer_label(la) for la in layers], rotation=60, fontsize=7)
    ax.set(ylabel="group sparsity", ylim=(0, 1), title="backbone group sparsity per layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "layer_sparsity.png")
    synthetic = ", synthetic data" if report["synthetic_data"] else ""
    write_report(report, f"Unseen-task adaptation ({report['dataset']}, split {report['split']}{synthetic})", out)

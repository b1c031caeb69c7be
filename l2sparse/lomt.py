"""Layer-optimised multi-task models (LOMT): each task's head attaches at the layer its own sparse run needs.

``python -m l2sparse.lomt --dataset synthetic --split synthetic-default --out runs/lomt``

1. **Sparse runs**: for every task, ``--trials`` single-task runs of the fixed-λ trainer (group sparsity).
2. **Activity**: per task and backbone layer, the fraction of input-channel groups of the layer's convs that are
   non-zero; a layer is *active* for a task when that fraction exceeds ``--threshold`` (1%) in every trial.
3. **Attachment**: ``deepest-active`` (default): the deepest layer that is still active, i.e. the layer after which
   the task's own sparse run leaves the backbone inactive (the last layer when all are active). ``probe``: train a
   head on the frozen dense backbone at each layer and take the earliest layer whose validation loss is within
   ``--epsilon`` (relative) of the best.
4. **LOMT model**: one backbone, each head fed by its chosen layer; a forward pass for a set of tasks computes the
   backbone only up to the deepest attachment among them (``MultiTaskModel`` truncates).
5. **Comparison** with the plain multi-task model (every head at the last layer): same data, steps and seed;
   metrics, parameters, MACs and latency per task set, measured side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from l2sparse.checkpoint import load_checkpoint, save_figure, save_json, save_text
from l2sparse.cli import ArgumentParser, fail, require_positive
from l2sparse.data import get_dataset, require_root
from l2sparse.device import resolve_device
from l2sparse.engine import Loop, fit
from l2sparse.errors import ConfigError, UserError
from l2sparse.guards import check_numbers, require_writable
from l2sparse.latency import latency_ms
from l2sparse.models import MODELS, MultiTaskModel, backbone_state, check_model, create_model
from l2sparse.sparsity import channel_groups, count_macs, count_params
from l2sparse.sparsity.groups import group_matrix
from l2sparse.tasks import Task, load_registry
from l2sparse.train import TrainConfig, load_split, task_losses, train_or_reuse


def layer_activity(model: MultiTaskModel) -> dict[str, float]:
    """Fraction of non-zero input-channel groups per backbone layer (``stem``, ``layer1``, ...).

    A layer's groups are those of every conv inside it (its blocks' convs and shortcut projections).
    """
    params = dict(model.named_parameters())
    counts: dict[str, list[int]] = {name: [0, 0] for name in model.backbone.layer_names}
    for g in channel_groups(model, "backbone", "in"):
        layer = g.layer.split(".")[1]
        rows = group_matrix(params, g)
        counts[layer][0] += int((rows != 0).any(dim=1).sum())
        counts[layer][1] += rows.shape[0]
    return {name: alive / total for name, (alive, total) in counts.items()}


def activity_from_states(
    model_name: str, tasks: Sequence[Task], states: Mapping[str, Sequence[Mapping[str, Tensor]]]
) -> dict[str, list[dict[str, float]]]:
    """Activity of every trial of every task, from single-task checkpoints' model states.

    Raises:
        ConfigError: a state that does not come from ``model_name`` (its backbone tensors differ in name or shape).
    """
    by_name = {t.name: t for t in tasks}
    out = {}
    for task, trials in states.items():
        model = create_model(model_name, [by_name[task]])
        expected = {k: v.shape for k, v in model.backbone.state_dict().items()}
        out[task] = []
        for i, state in enumerate(trials):
            got = {k: v.shape for k, v in backbone_state(state).items()}
            if got != expected:
                raise ConfigError(
                    f"activity: run {i} of task {task!r} is not a {model_name!r} model (its backbone tensors differ)"
                )
            model.load_state_dict(state)
            out[task].append(layer_activity(model))
    return out


def active_layers(trials: Sequence[Mapping[str, float]], threshold: float) -> dict[str, bool]:
    """A layer is active for a task if more than ``threshold`` of its groups are non-zero in *every* trial."""
    return {layer: all(t[layer] > threshold for t in trials) for layer in trials[0]}


def deepest_active(active: Mapping[str, bool], layers: Sequence[str]) -> str:
    """The deepest active layer (the layer after which the backbone is inactive); the first layer if none is."""
    chosen = layers[0]
    for layer in layers:
        if active[layer]:
            chosen = layer
    return chosen


def earliest_within(losses: Mapping[str, float], layers: Sequence[str], epsilon: float) -> str:
    """The earliest layer whose loss is within ``epsilon`` (relative) of the best one."""
    best = min(losses.values())
    return next(layer for layer in layers if losses[layer] <= best * (1 + epsilon))


@dataclass(frozen=True)
class RuleInput:
    """What an attachment rule may look at for one task: the run's config, the task, the backbone's layers in
    forward order, which of them its sparse runs keep active, and the output folder and progress flag (for rules
    that train)."""

    cfg: LomtConfig
    task: Task
    layers: Sequence[str]
    active: Mapping[str, bool]
    out: Path
    progress: bool


def deepest_active_rule(x: RuleInput) -> tuple[str, dict[str, float] | None]:
    return deepest_active(x.active, x.layers), None


def probe_rule(x: RuleInput) -> tuple[str, dict[str, float] | None]:
    losses = probe_losses(x.cfg, x.task, x.out, x.progress)
    return earliest_within(losses, x.layers, x.cfg.epsilon), losses


# attachment rules by ``--rule`` name: ``rule(RuleInput) -> (layer, probe losses per layer or None)``
RULES: dict[str, Callable[[RuleInput], tuple[str, dict[str, float] | None]]] = {
    "deepest-active": deepest_active_rule,
    "probe": probe_rule,
}


@dataclass
class LomtConfig:
    dataset: str = "synthetic"
    split: str = "synthetic-default"
    tasks: list[str] | None = None
    data_root: str | None = None
    tasks_dir: list[str] | None = None
    model: str = "tiny"
    lam: float = 0.02
    group_mode: str = "out"
    sparse_steps: int = 300
    trials: int = 2
    threshold: float = 0.01
    rule: str = "deepest-active"
    epsilon: float = 0.05
    probe_steps: int = 100
    steps: int = 300
    image_size: int = 32
    train_size: int = 500
    test_size: int = 200
    seed: int = 0
    device: str = "auto"
    attach: dict[str, str] = field(default_factory=dict)

    def validate(self) -> list[Task]:
        reg = load_registry(self.tasks_dir)
        reg.split_of(self.split, self.dataset)
        tasks = reg.get(self.dataset, self.tasks) if self.tasks else reg.seen(self.split)
        check_model(self.model)
        require_root(self.dataset, self.data_root)
        if self.rule not in RULES:
            raise ConfigError(f"rule: expected one of {', '.join(RULES)}, got {self.rule!r}")
        require_positive(self, ("sparse_steps", "trials", "probe_steps", "steps", "image_size", "train_size"))
        check_numbers(self)
        self.train_config(tasks, lam=self.lam, group_mode=self.group_mode).validate()  # the runs' own options
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"threshold: expected a fraction of active groups in [0, 1), got {self.threshold}")
        if self.epsilon < 0:
            raise ConfigError(f"epsilon: expected a relative loss tolerance ≥ 0, got {self.epsilon}")

        layers = MODELS[self.model].backbone().layer_names
        for task, layer in self.attach.items():
            if task not in {t.name for t in tasks}:
                raise ConfigError(f"attach: {task!r} is not one of the tasks ({', '.join(t.name for t in tasks)})")
            if layer not in layers:
                raise ConfigError(f"attach: unknown layer {layer!r} for {task!r}; valid layers: {', '.join(layers)}")
        resolve_device(self.device)
        return tasks

    def train_config(self, tasks: Sequence[Task], **changes) -> TrainConfig:
        base = TrainConfig(
            dataset=self.dataset,
            tasks=[t.name for t in tasks],
            data_root=self.data_root,
            tasks_dir=self.tasks_dir,
            model=self.model,
            image_size=self.image_size,
            train_size=self.train_size,
            test_size=self.test_size,
            seed=self.seed,
            device=self.device,
        )
        return TrainConfig(**{**asdict(base), **changes})


PROBE_LR, PROBE_BATCH = 1e-3, 16  # the probe heads' Adam learning rate and batch


def head_loss(model: MultiTaskModel, task: Task, data: Mapping[str, Tensor], idx: Tensor) -> Tensor:
    """``task``'s loss on the images ``data["image"][idx]``."""
    return task_losses(model, [task], {k: v[idx] for k, v in data.items()})[task.name]


def probe_losses(cfg: LomtConfig, task: Task, out: Path, progress: bool) -> dict[str, float]:
    """Validation loss of a head trained at each layer on the frozen backbone of a dense single-task run."""
    dense = cfg.train_config([task], lam=0.0, steps=cfg.sparse_steps, eval_split="val")
    dense_dir = out / "probe" / task.name / "dense"
    train_or_reuse(dense, dense_dir, progress)
    state = load_checkpoint(dense_dir / "checkpoint.pt", ("model",))["model"]
    device = resolve_device(cfg.device)
    data = load_split(dense, [task], "train", cfg.train_size, device)
    val = load_split(dense, [task], "val", cfg.test_size, device)
    losses = {}
    for layer in MODELS[cfg.model].backbone().layer_names:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, [task], attach={task.name: layer}).to(device)
        model.backbone.load_state_dict(backbone_state(state))
        model.backbone.requires_grad_(False)
        model.backbone.eval()
        opt = torch.optim.Adam(model.heads.parameters(), lr=PROBE_LR)
        what, fix = f"lomt probe ({task.name}, {layer})", "check the task's loss and targets"
        loop = Loop(len(data["image"]), PROBE_BATCH, torch.Generator().manual_seed(cfg.seed), device, what, fix)
        fit(opt, partial(head_loss, model, task, data), loop, cfg.probe_steps)
        with torch.no_grad():
            model.eval()
            losses[layer] = task_losses(model, [task], val)[task.name].item()
    return losses


def _cell(value: float | None) -> str:
    """A metric for the table; undefined (NaN, or null in a reused report) shows as –."""
    return "–" if value is None or value != value else f"{value:.3f}"


def run(cfg: LomtConfig, out: str | Path, progress: bool = True) -> dict:
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
            run_dir = out / "sparse" / task.name / f"trial{trial}"
            train_or_reuse(tcfg, run_dir, progress)
            states.setdefault(task.name, []).append(load_checkpoint(run_dir / "checkpoint.pt", ("model",))["model"])
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
        run_dir = out / name
        reports[name] = train_or_reuse(tcfg, run_dir, progress)
        model = create_model(cfg.model, tasks, attach=where or None)
        model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", ("model",))["model"])
        models[name] = model.eval()

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
    report = {
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


def write_outputs(report: dict, out: Path) -> None:
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
    lines = [
        "| task | layer | metric | LOMT | plain MTL | MACs LOMT | MACs plain | ms LOMT | ms plain |",
        "|---" * 9 + "|",
    ]
    for t in tasks:
        metric = next(iter(report["metrics"]["lomt"][t]))
        c = report["task_sets"][t]
        lines.append(
            f"| {t} | {report['attach'][t]} | {metric} | {_cell(report['metrics']['lomt'][t][metric])} | "
            f"{_cell(report['metrics']['plain'][t][metric])} | {c['lomt']['macs'] / 1e6:.2f}M | "
            f"{c['plain']['macs'] / 1e6:.2f}M | {c['lomt']['latency_ms']:.2f} | {c['plain']['latency_ms']:.2f} |"
        )
    all_key = "+".join(tasks)
    c = report["task_sets"][all_key]
    lines.append(
        f"| all tasks | | | | | {c['lomt']['macs'] / 1e6:.2f}M | {c['plain']['macs'] / 1e6:.2f}M | "
        f"{c['lomt']['latency_ms']:.2f} | {c['plain']['latency_ms']:.2f} |"
    )
    report["table"] = "\n".join(lines)
    save_text(
        f"# LOMT vs plain multi-task ({report['dataset']}, {report['split']})\n\n{report['table']}\n", out / "report.md"
    )
    save_json(report, out / "report.json")


def build_parser() -> ArgumentParser:
    d = LomtConfig()
    p = ArgumentParser(prog="python -m l2sparse.lomt", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--dataset", default=d.dataset, help="dataset (default: %(default)s)")
    add("--split", default=d.split, help="split whose seen tasks are used (default: %(default)s)")
    add("--tasks", default=None, help="comma-separated tasks instead of the split's seen tasks")
    add("--data-root", default=None, help="dataset folder (real datasets only)")
    add("--tasks-dir", action="append", default=None, help="extra folder of task files (repeatable)")
    add("--model", default=d.model, help="model (default: %(default)s)")
    add("--lam", type=float, default=d.lam, help="λ of the sparse single-task runs (default: %(default)s)")
    add("--group-mode", default=d.group_mode, help="groups of the sparse runs (default: %(default)s)")
    add("--sparse-steps", type=int, default=d.sparse_steps, help="steps of each sparse run (default: %(default)s)")
    add("--trials", type=int, default=d.trials, help="sparse runs per task (default: %(default)s)")
    add("--threshold", type=float, default=d.threshold, help="active if more groups non-zero (default: 0.01)")
    add("--rule", default=d.rule, help=f"attachment rule: {', '.join(RULES)} (default: %(default)s)")
    add("--epsilon", type=float, default=d.epsilon, help="probe rule tolerance (default: %(default)s)")
    add("--probe-steps", type=int, default=d.probe_steps, help="probe head steps (default: %(default)s)")
    add("--attach", action="append", default=[], metavar="TASK=LAYER", help="fix a task's layer (repeatable)")
    add("--steps", type=int, default=d.steps, help="steps of the LOMT and plain models (default: %(default)s)")
    add("--image-size", type=int, default=d.image_size, help="square image side (default: %(default)s)")
    add("--train-size", type=int, default=d.train_size, help="training images (default: %(default)s)")
    add("--test-size", type=int, default=d.test_size, help="test images (default: %(default)s)")
    add("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    add("--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)")
    add("--out", default="runs/lomt", help="output folder (default: %(default)s)")
    add("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [a for a in args.attach if a.count("=") != 1]
    if bad:
        fail(parser.prog, f"attach: expected TASK=LAYER, got {bad[0]!r}")
    values = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "attach", "tasks")}
    cfg = LomtConfig(
        **values,
        tasks=args.tasks.split(",") if args.tasks else None,
        attach=dict(a.split("=") for a in args.attach),
    )
    try:
        report = run(cfg, args.out, progress=not args.quiet)
    except UserError as e:
        fail(parser.prog, str(e))
    print(report["table"])
    print(f"report: {Path(args.out) / 'report.json'}, heat map: {Path(args.out) / 'activity.png'}")
    return report


if __name__ == "__main__":
    main()

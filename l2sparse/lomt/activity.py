"""Which backbone layers a task's own sparse runs keep active, and the layer choices made from that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from l2sparse.errors import ConfigError
from l2sparse.models import MultiTaskModel, backbone_state, create_model
from l2sparse.sparsity import channel_groups
from l2sparse.sparsity.groups import group_matrix
from l2sparse.tasks import Task


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

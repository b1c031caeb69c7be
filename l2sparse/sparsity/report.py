"""Sparsity, parameter and MAC counts of a model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from l2sparse.sparsity.groups import ConvGroups, group_matrix


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Sequence[int], **forward_kwargs) -> int:
    """Multiply-accumulates of one forward pass on a single image of shape ``input_size = (3, H, W)``.

    Counted by ``torch.utils.flop_counter`` (convs and matmuls; 1 MAC = 2 FLOPs), in eval mode.
    ``forward_kwargs`` go to the model, e.g. ``tasks=["depth"]`` for one task set of a multi-task model.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
        with FlopCounterMode(display=False) as counter:
            model(x, **forward_kwargs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@torch.no_grad()
def sparsity_report(model: nn.Module, groups: Sequence[ConvGroups], input_size: Sequence[int] | None = None) -> dict:
    """Per-layer and overall sparsity of the grouped (shared) layers.

    Args:
        model: the model the groups were taken from.
        groups: its channel groups.
        input_size: ``(3, H, W)``; when given, ``macs`` is included.

    Returns:
        ``{"group": float, "param": float, "params": int, "macs": int, "per_layer": {layer: {...}}}`` where
        ``group`` is the fraction of groups that are exactly zero, ``param`` the fraction of grouped scalars that
        are exactly zero (both in [0, 1]), and each layer entry has ``groups``, ``zero_groups``,
        ``group_sparsity``, ``params``, ``zero_params`` and ``param_sparsity``.
    """
    params = dict(model.named_parameters())
    per_layer = {}
    for g in groups:
        rows = group_matrix(params, g)
        zero_rows = int((rows == 0).all(dim=1).sum())
        zeros = int((rows == 0).sum())
        per_layer[g.layer] = {
            "groups": rows.shape[0],
            "zero_groups": zero_rows,
            "group_sparsity": zero_rows / rows.shape[0],
            "params": rows.numel(),
            "zero_params": zeros,
            "param_sparsity": zeros / rows.numel(),
        }
    n_groups = sum(v["groups"] for v in per_layer.values())
    n_params = sum(v["params"] for v in per_layer.values())
    report = {
        "group": sum(v["zero_groups"] for v in per_layer.values()) / n_groups,
        "param": sum(v["zero_params"] for v in per_layer.values()) / n_params,
        "params": count_params(model),
        "per_layer": per_layer,
    }
    if input_size is not None:
        report["macs"] = count_macs(model, input_size)
    return report

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


def _spaces_of(model: nn.Module) -> list:
    if not hasattr(model, "channel_spaces"):
        raise TypeError(
            f"{type(model).__name__} has no channel_spaces() describing its wiring; its MACs cannot be counted"
        )
    return model.channel_spaces()


@torch.no_grad()
def conv_areas(model: nn.Module, input_size: Sequence[int]) -> dict[str, int]:
    """Output pixels ``H_out · W_out`` of every conv in ``model.channel_spaces()`` for one image ``(3, H, W)``,
    keyed by module name (convs off every task's forward path are left out)."""
    names = {id(m): n for n, m in model.named_modules()}
    convs = {id(c): c for s in _spaces_of(model) for c in [*(p for p, _ in s.producers), *s.readers]}
    area: dict[str, int] = {}
    hooks = [
        c.register_forward_hook(lambda m, i, o: area.__setitem__(names[id(m)], o.shape[-2] * o.shape[-1]))
        for c in convs.values()
    ]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, *input_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return area


@torch.no_grad()
def conv_macs(model: nn.Module, input_size: Sequence[int], areas: dict[str, int] | None = None) -> tuple[int, int]:
    """``(dense, compact)`` multiply-accumulates of the convs in ``model.channel_spaces()`` on one image.

    The compact count is what [`compact`][l2sparse.sparsity.compact.compact] would leave (channels that no reader
    reads or no producer writes are gone), computed from the channel masks without building the smaller model, so
    it is cheap enough to measure after every meta-iteration. ``input_size`` is ``(3, H, W)``; ``areas`` (from
    [`conv_areas`][l2sparse.sparsity.report.conv_areas]) saves the forward pass that measures output sizes.

    Raises:
        TypeError: the model does not describe its wiring (no ``channel_spaces()``), so it cannot be counted.
    """
    from l2sparse.sparsity.compact import keep_mask

    spaces = _spaces_of(model)
    areas = conv_areas(model, input_size) if areas is None else areas
    names = {id(m): n for n, m in model.named_modules()}
    convs = {id(c): c for s in spaces for c in [*(p for p, _ in s.producers), *s.readers]}
    n_in = {k: c.in_channels for k, c in convs.items()}
    n_out = {k: c.out_channels for k, c in convs.items()}
    for s in spaces:
        alive = int(keep_mask(s).sum())
        for c, _ in s.producers:
            n_out[id(c)] = alive
        for c in s.readers:
            n_in[id(c)] = alive
    dense = compact_ = 0
    for k, c in convs.items():
        if names[k] not in areas:  # not on the forward path of any task (a truncated backbone)
            continue
        per = c.kernel_size[0] * c.kernel_size[1] * areas[names[k]] // c.groups
        dense += c.in_channels * c.out_channels * per
        compact_ += n_in[k] * n_out[k] * per
    return dense, compact_

"""Physically remove channels that group sparsity made dead.

A channel of a feature map can be deleted exactly when either

* every reader's input-channel slice ``W[:, j]`` is zero (nobody reads it: input-channel groups), or
* every producer writes exact zeros to it (its BatchNorm ``γ_j = β_j = 0``, or a zero filter without BN:
  output-channel groups),

and it is not pinned (the network input, or a feature map whose readers are not all known). Channels of a residual
stream are one space shared by all its producers and readers, so they go only when all of those agree.

A feature map that heads read is pinned in ``channel_spaces()``, but a model with ``head_inputs()`` names the head
layers that read it (a dense head's first conv, a pooled head's linear layer). Its channels then go by the same two
rules with those layers counted as readers, and the heads' input slices ``W[:, j]`` are removed with them. Both
rules hold for any batch, so the compact model equals the original in train mode as well as in eval mode:
BatchNorm ``γ_j = β_j = 0`` writes ``0 · x̂ + 0 = 0`` whatever statistics normalise ``x̂``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

import torch
from torch import Tensor, nn

from l2sparse.sparsity.fuse import fuse_batchnorm
from l2sparse.sparsity.groups import ConvGroups
from l2sparse.sparsity.report import count_macs, count_params, sparsity_report
from l2sparse.sparsity.spaces import ChannelSpace


def _unread(readers: Sequence[nn.Module], n: int, device: torch.device) -> Tensor:
    """``(n,)``: channels whose input slice ``W[:, j]`` is zero in every reader (convs and linear layers)."""
    unread = torch.ones(n, dtype=torch.bool, device=device)
    for r in readers:
        unread &= (r.weight.transpose(0, 1).flatten(1) == 0).all(dim=1)
    return unread


def _unproduced(space: ChannelSpace, n: int, device: torch.device) -> Tensor:
    """``(n,)``: channels every producer writes as exact zeros, in train and eval mode."""
    unproduced = torch.ones(n, dtype=torch.bool, device=device)
    for conv, bn in space.producers:
        if bn is not None:
            unproduced &= (bn.weight == 0) & (bn.bias == 0)
        else:
            dead = (conv.weight.flatten(1) == 0).all(dim=1)
            unproduced &= dead if conv.bias is None else dead & (conv.bias == 0)
    return unproduced


def keep_mask(space: ChannelSpace, head_layers: Sequence[nn.Module] = ()) -> Tensor:
    """Boolean ``(C,)`` mask of the channels of ``space`` that must stay (at least one is always kept).

    Args:
        space: the channel space.
        head_layers: layers outside the space's description that read it too (the heads' first layers, from
            ``head_inputs()``). When given, they count as readers and the space's pin is lifted: every reader is
            known, so the usual rules apply. Without them a pinned space keeps every channel.
    """
    convs = [c for c, _ in space.producers] + space.readers
    n = space.producers[0][0].out_channels if space.producers else space.readers[0].in_channels
    device = convs[0].weight.device
    if space.pinned and not head_layers:
        return torch.ones(n, dtype=torch.bool, device=device)
    readers = [*space.readers, *head_layers]
    unread = _unread(readers, n, device) if readers else torch.ones(n, dtype=torch.bool, device=device)
    keep = ~(unread | _unproduced(space, n, device))
    if not keep.any():
        keep[0] = True
    return keep


def _param(t: Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.clone(), requires_grad=like.requires_grad)


def _slice_producer(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, idx: Tensor) -> None:
    conv.weight = _param(conv.weight[idx], conv.weight)
    if conv.bias is not None:
        conv.bias = _param(conv.bias[idx], conv.bias)
    conv.out_channels = len(idx)
    if bn is not None:
        bn.weight = _param(bn.weight[idx], bn.weight)
        bn.bias = _param(bn.bias[idx], bn.bias)
        bn.running_mean = bn.running_mean[idx].clone()
        bn.running_var = bn.running_var[idx].clone()
        bn.num_features = len(idx)


def _slice_reader(layer: nn.Conv2d | nn.Linear, idx: Tensor) -> None:
    layer.weight = _param(layer.weight[:, idx], layer.weight)
    if isinstance(layer, nn.Linear):
        layer.in_features = len(idx)
    else:
        layer.in_channels = len(idx)


@torch.no_grad()
def compact(model: nn.Module, fuse: bool = False) -> nn.Module:
    """A physically smaller copy of ``model`` with dead channels removed; ``model`` itself is untouched.

    Args:
        model: a module with a ``channel_spaces()`` method (every model from
            [`create_model`][l2sparse.models.registry.create_model] has one, and ``head_inputs()`` too, which lets
            the feature maps heads read lose their dead channels).
        fuse: also fold every BatchNorm into the conv before it
            ([`fuse_batchnorm`][l2sparse.sparsity.fuse.fuse_batchnorm]); ``model`` must then be in eval mode, and
            the result is for inference only.

    Returns:
        A deep copy whose convs, BatchNorms and head input layers have fewer channels and whose outputs equal the
        original's up to float rounding, in train and eval mode (with ``fuse``: in eval mode only).
    """
    if not hasattr(model, "channel_spaces"):
        raise TypeError(f"compact: {type(model).__name__} has no channel_spaces() describing its wiring")
    if fuse and model.training:
        raise ValueError("compact(fuse=True) folds BatchNorm running statistics: call model.eval() first")
    small = copy.deepcopy(model)
    spaces = small.channel_spaces()
    heads = small.head_inputs() if hasattr(small, "head_inputs") else {}
    masks = [keep_mask(s, heads.get(i, ())) for i, s in enumerate(spaces)]
    for i, (space, keep) in enumerate(zip(spaces, masks, strict=True)):
        if keep.all():
            continue
        idx = keep.nonzero().flatten()
        for conv, bn in space.producers:
            _slice_producer(conv, bn, idx)
        for layer in [*space.readers, *heads.get(i, ())]:
            _slice_reader(layer, idx)
    if hasattr(small, "sync_out_channels"):
        small.sync_out_channels()
    return fuse_batchnorm(small) if fuse else small


@torch.no_grad()
def max_output_difference(
    a: Callable[[Tensor], Mapping[str, Tensor]], b: Callable[[Tensor], Mapping[str, Tensor]], x: Tensor
) -> float:
    """Largest absolute difference between the task outputs ``{task: output}`` of two multi-task models (or
    anything that runs one, such as [`load_onnx`][l2sparse.sparsity.export.load_onnx]'s) on images ``x``
    ``(B, 3, H, W)``."""
    ya, yb = a(x), b(x)
    return max((ya[k] - yb[k]).abs().max().item() for k in ya)


class SizeReport(TypedDict):
    """The size keys every report carries ([`compaction_summary`][l2sparse.sparsity.compact.compaction_summary])."""

    sparsity: dict[str, Any]  # group and param: fractions of zero groups / grouped scalars; per_layer
    params: dict[str, int]  # dense, compact, backbone_dense, backbone_compact
    macs: dict[str, int]  # dense, compact: one image
    compaction: dict[str, float]  # max_abs_diff of the compact model's outputs


def compaction_summary(model: nn.Module, groups: Sequence[ConvGroups], probe: Tensor, image_size: int) -> SizeReport:
    """A report's size keys: ``sparsity`` (group, param, per layer), dense and compact ``params`` (whole model and
    backbone) and ``macs`` (one image of ``image_size``), and ``compaction.max_abs_diff``, the largest output
    difference of the compact model on ``probe (B, 3, H, W)``."""
    size = (3, image_size, image_size)
    small = compact(model).eval()
    model.eval()
    report = sparsity_report(model, groups)
    return {
        "sparsity": {k: report[k] for k in ("group", "param", "per_layer")},
        "params": {
            "dense": count_params(model),
            "compact": count_params(small),
            "backbone_dense": count_params(model.backbone),
            "backbone_compact": count_params(small.backbone),
        },
        "macs": {"dense": count_macs(model, size), "compact": count_macs(small, size)},
        "compaction": {"max_abs_diff": max_output_difference(model, small, probe)},
    }

"""Physically remove channels that group sparsity made dead.

A channel of a feature map can be deleted exactly when either

* every reader's input-channel slice ``W[:, j]`` is zero (nobody reads it: input-channel groups), or
* every producer writes exact zeros to it (its BatchNorm ``γ_j = β_j = 0``, or a zero filter without BN:
  output-channel groups),

and it is not pinned (the network input, or a feature map a head reads). Channels of a residual stream are one
space shared by all its producers and readers, so they go only when all of those agree.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from l2sparse.sparsity.spaces import ChannelSpace


def _all_zero(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    return (t == 0).all(dim=dims) if dims else t == 0


def keep_mask(space: ChannelSpace) -> Tensor:
    """Boolean ``(C,)`` mask of the channels of ``space`` that must stay (at least one is always kept)."""
    convs = [c for c, _ in space.producers] + space.readers
    n = space.producers[0][0].out_channels if space.producers else space.readers[0].in_channels
    device = convs[0].weight.device
    if space.pinned:
        return torch.ones(n, dtype=torch.bool, device=device)
    unread = torch.ones(n, dtype=torch.bool, device=device)
    for r in space.readers:
        unread &= _all_zero(r.weight.transpose(0, 1), (1, 2, 3))
    if not space.readers:
        unread[:] = True
    unproduced = torch.ones(n, dtype=torch.bool, device=device)
    for conv, bn in space.producers:
        if bn is not None:
            unproduced &= (bn.weight == 0) & (bn.bias == 0)
        else:
            dead = _all_zero(conv.weight, (1, 2, 3))
            unproduced &= dead if conv.bias is None else dead & (conv.bias == 0)
    keep = ~(unread | unproduced)
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


def _slice_reader(conv: nn.Conv2d, idx: Tensor) -> None:
    conv.weight = _param(conv.weight[:, idx], conv.weight)
    conv.in_channels = len(idx)


@torch.no_grad()
def compact(model: nn.Module) -> nn.Module:
    """A physically smaller copy of ``model`` with dead channels removed; ``model`` itself is untouched.

    Args:
        model: a module with a ``channel_spaces()`` method (every model from
            [`create_model`][l2sparse.models.registry.create_model] has one).

    Returns:
        A deep copy whose convs and BatchNorms have fewer channels and whose outputs equal the original's up to
        float rounding, in train and eval mode.
    """
    if not hasattr(model, "channel_spaces"):
        raise TypeError(f"compact: {type(model).__name__} has no channel_spaces() describing its wiring")
    small = copy.deepcopy(model)
    spaces = small.channel_spaces()
    masks = [keep_mask(s) for s in spaces]
    for space, keep in zip(spaces, masks, strict=True):
        if keep.all():
            continue
        idx = keep.nonzero().flatten()
        for conv, bn in space.producers:
            _slice_producer(conv, bn, idx)
        for conv in space.readers:
            _slice_reader(conv, idx)
    if hasattr(small, "sync_out_channels"):
        small.sync_out_channels()
    return small


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """Largest absolute difference between the task outputs of two multi-task models on images ``x``."""
    ya, yb = a(x), b(x)
    return max((ya[k] - yb[k]).abs().max().item() for k in ya)

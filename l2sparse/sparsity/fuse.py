"""Fold BatchNorm into the conv before it, for inference.

In eval mode ``bn(conv(x)) = γ (W * x - μ) / √(σ² + ε) + β`` is one conv with weight ``γ W / √(σ² + ε)`` and bias
``β - γ μ / √(σ² + ε)``; ``torch.nn.utils.fusion.fuse_conv_bn_eval`` computes it. This module only finds the pairs:
every [`ConvBNAct`][l2sparse.models.layers.ConvBNAct] (``act(bn(conv(x)))``), which is how the backbones and heads
build every conv that a BatchNorm follows. Modules are walked rather than traced with ``torch.fx`` because a multi-task
model's forward (a task subset, a backbone truncated at the deepest attachment, dict outputs) does not trace
symbolically, and the walk keeps the model's class, its ``attach`` and its task selection.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


@torch.no_grad()
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """An inference-only copy of ``model`` (in eval mode) with every ``ConvBNAct``'s BatchNorm folded into its conv.

    The copy's outputs equal ``model``'s in eval mode up to float rounding. It is for inference only: its convs
    carry the running statistics, so in train mode it would not normalise with batch statistics as ``model``
    does, and it no longer has BatchNorms for [`compact`][l2sparse.sparsity.compact.compact] to read (compact
    first, then fuse: ``compact(model, fuse=True)``).

    Raises:
        ValueError: ``model`` is in train mode (its BatchNorms use batch statistics, which cannot be folded).
    """
    from l2sparse.models.layers import ConvBNAct  # here: l2sparse.models imports l2sparse.sparsity

    if model.training:
        raise ValueError("fuse_batchnorm folds BatchNorm running statistics: call model.eval() first")
    fused = copy.deepcopy(model)
    for unit in fused.modules():
        if isinstance(unit, ConvBNAct) and isinstance(unit.bn, nn.BatchNorm2d):
            unit.conv = fuse_conv_bn_eval(unit.conv, unit.bn)
            unit.bn = nn.Identity()
    return fused

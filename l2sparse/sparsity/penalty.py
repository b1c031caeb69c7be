"""The group-lasso penalty ``Ω(θ) = Σ_layers √(group size) · Σ_g ‖W_g‖₂``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from l2sparse.sparsity.groups import ConvGroups, group_norms


def as_params(params: Mapping[str, Tensor] | nn.Module) -> Mapping[str, Tensor]:
    """A parameter dict from a module (its ``named_parameters()``) or a dict given as is."""
    return dict(params.named_parameters()) if isinstance(params, nn.Module) else params


def layer_penalties(params: Mapping[str, Tensor] | nn.Module, groups: Sequence[ConvGroups]) -> Tensor:
    """``√size · Σ_g ‖W_g‖₂`` for every layer, shape ``(num_layers,)``; differentiable."""
    p = as_params(params)
    return torch.stack([g.group_size(p) ** 0.5 * group_norms(p, g).sum() for g in groups])


def penalty(
    params: Mapping[str, Tensor] | nn.Module,
    groups: Sequence[ConvGroups],
    lam: float | Tensor = 1.0,
) -> Tensor:
    """``Σ_layers λ_l √size_l Σ_g ‖W_g‖₂`` as a 0-d tensor; differentiable in the parameters and in ``lam``.

    Args:
        params: a module or a dict name -> tensor holding every name in ``groups``.
        groups: from [`channel_groups`][].
        lam: scalar λ, or a tensor of shape ``(num_layers,)`` for per-layer λ.
    """
    per_layer = layer_penalties(params, groups)
    lam_t = torch.as_tensor(lam, dtype=per_layer.dtype, device=per_layer.device)
    if lam_t.ndim not in (0, 1) or (lam_t.ndim == 1 and lam_t.numel() != len(groups)):
        raise ValueError(f"lam: expected a scalar or {len(groups)} per-layer values, got shape {tuple(lam_t.shape)}")
    return (lam_t * per_layer).sum()

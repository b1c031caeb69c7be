"""Group soft-threshold (the proximal operator of ``αλΩ``) and optimisers that apply it after each step.

``prox`` is a pure function over parameter dicts so that it can sit inside a differentiable inner loop:
``W_g ← W_g · max(0, 1 − αλ√size / ‖W_g‖₂)``. Groups under the threshold become exactly zero; the result is
differentiable in λ wherever ``‖W_g‖ ≠ αλ√size``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from l2sparse.sparsity.groups import ConvGroups, group_matrix
from l2sparse.sparsity.penalty import as_params


def _lam_per_layer(lam: float | Tensor, n: int, like: Tensor) -> Tensor:
    lam_t = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    if lam_t.ndim == 0:
        return lam_t.expand(n)
    if lam_t.shape != (n,):
        raise ValueError(f"lam: expected a scalar or {n} per-layer values, got shape {tuple(lam_t.shape)}")
    return lam_t


def group_scales(params: Mapping[str, Tensor], g: ConvGroups, threshold: Tensor) -> Tensor:
    """Soft-threshold factor of every group, ``max(0, 1 − threshold / ‖W_g‖)``, shape ``(num_groups,)``.

    ``threshold`` is ``αλ√size``. Zero groups get factor 0 (and zero gradient) instead of ``0/0``.
    """
    norms = torch.linalg.vector_norm(group_matrix(params, g), dim=1)
    return torch.relu(1.0 - threshold / norms.clamp_min(torch.finfo(norms.dtype).tiny))


def prox(
    params: Mapping[str, Tensor],
    groups: Sequence[ConvGroups],
    lam: float | Tensor,
    lr: float | Tensor | Sequence[Tensor],
) -> dict[str, Tensor]:
    """Apply the group soft-threshold with step ``lr`` (α) and strength ``lam`` (λ).

    Args:
        params: name -> tensor; must contain every parameter named in ``groups``.
        groups: the channel groups.
        lam: λ ≥ 0, a scalar or a ``(num_layers,)`` tensor (per-layer λ). Gradients flow into it.
        lr: the step size α of the gradient step this prox follows: a scalar, or a sequence with one step per
            layer (a scalar or a ``(num_groups,)`` tensor each). After an Adam step use
            [`metric_prox`][l2sparse.sparsity.metric_prox.metric_prox] instead.

    Returns:
        A new dict: grouped tensors replaced by their thresholded values, all others passed through unchanged.
    """
    if not groups:
        return dict(params)
    for name in (n for g in groups for n in (g.weight, *g.extras)):
        if name not in params:
            raise KeyError(f"prox: params lacks {name!r}; build the groups on the module the parameter dict comes from")
    if (isinstance(lam, int | float) and lam < 0) or (isinstance(lr, int | float) and lr < 0):
        raise ValueError(f"prox: expected λ ≥ 0 and lr ≥ 0, got λ = {lam}, lr = {lr}")
    lams = _lam_per_layer(lam, len(groups), params[groups[0].weight])
    steps = lr if isinstance(lr, Sequence) else [lr] * len(groups)
    out = dict(params)
    for g, lam_l, lr_l in zip(groups, lams, steps, strict=True):
        scale = group_scales(params, g, lr_l * lam_l * g.group_size(params) ** 0.5)
        w = params[g.weight]
        shape = [1] * w.ndim
        shape[g.dim] = -1
        out[g.weight] = w * scale.view(shape)
        for e in g.extras:
            out[e] = params[e] * scale
    return out


@torch.no_grad()
def prox_(
    params: nn.Module | Mapping[str, Tensor],
    groups: Sequence[ConvGroups],
    lam: float | Tensor,
    lr: float | Tensor | Sequence[Tensor],
) -> None:
    """In-place [`prox`][] on a module's parameters or a dict of leaf tensors (no autograd graph)."""
    named = as_params(params)
    new = prox({k: named[k] for g in groups for k in (g.weight, *g.extras)}, groups, lam, lr)
    for k, v in new.items():
        named[k].copy_(v)

"""Group soft-threshold (the proximal operator of ``αλΩ``) and optimisers that apply it after each step.

``prox`` is a pure function over parameter dicts so that it can sit inside a differentiable inner loop:
``W_g ← W_g · max(0, 1 − αλ√size / ‖W_g‖₂)``. Groups under the threshold become exactly zero; the result is
differentiable in λ wherever ``‖W_g‖ ≠ αλ√size``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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
            layer (a scalar or a ``(num_groups,)`` tensor each), e.g. from [`adam_prox_steps`][].

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
def adam_prox_steps(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor], groups: Sequence[ConvGroups]
) -> list[Tensor]:
    """The prox step α after an Adam step, per layer: ``lr / (√mean(v̂) + ε)`` over the layer's grouped scalars.

    Hand-written because the proximal step of an adaptive optimiser has no closed form for group lasso. Adam moves
    a coordinate by about ``lr·ĝ/√v̂``; normalising by the layer's gradient RMS makes the prox act like an SGD prox
    on that normalised gradient, so a group survives when its gradient (relative to the layer's RMS) and its own
    norm outweigh λ√size. With the plain ``lr`` the prox outruns Adam's normalised steps for every group at once
    past some λ; with a per-element ``lr/√v̂`` a group whose gradients are tiny gets a huge step and dies at once
    whatever its norm. Layers the optimiser has not stepped yet get ``lr``.
    """
    info = {id(p): (pg, optimizer.state.get(p, {})) for pg in optimizer.param_groups for p in pg["params"]}
    steps = []
    for g in groups:
        v_sum, count = 0.0, 0
        pg = info[id(params[g.weight])][0]
        for name in (g.weight, *g.extras):
            group_of, state = info[id(params[name])]
            if "exp_avg_sq" not in state:
                break
            v_sum += float((state["exp_avg_sq"] / (1 - group_of["betas"][1] ** float(state["step"]))).sum())
            count += state["exp_avg_sq"].numel()
        else:
            steps.append(torch.tensor(pg["lr"] / ((v_sum / count) ** 0.5 + pg["eps"])))
            continue
        steps.append(torch.tensor(float(pg["lr"])))
    return steps


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


class _ProxMixin:
    """After the wrapped optimiser's step, apply the group prox with each parameter's own ``lam``.

    ``model`` names the grouped parameters; ``params`` (default ``model.parameters()``) is what the optimiser
    updates, e.g. the model's parameters plus a loss-weighting module's. ``lam`` lives in the param groups, so it
    is saved in ``state_dict()`` and can be changed between steps. The prox step α is the param group's ``lr`` for
    SGD and the layer's RMS-normalised Adam step ([`adam_prox_steps`][]) for Adam.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ConvGroups],
        lam: float,
        lr: float,
        params: Iterable[Tensor] | Iterable[dict] | None = None,
        **kwargs,
    ) -> None:
        if lam < 0:
            raise ValueError(f"lam: expected λ ≥ 0, got {lam}")
        super().__init__(model.parameters() if params is None else params, lr=lr, **kwargs)
        self.groups = list(groups)
        self._module = model
        for pg in self.param_groups:
            pg.setdefault("lam", lam)

    def _param_groups_of(self, named: Mapping[str, Tensor]) -> list[dict]:
        """The param group holding each grouped layer's weight, in ``self.groups`` order."""
        by_id = {id(p): pg for pg in self.param_groups for p in pg["params"]}
        missing = [g.weight for g in self.groups if id(named[g.weight]) not in by_id]
        if missing:
            raise ValueError(f"grouped parameter {missing[0]!r} is not handled by this optimiser")
        return [by_id[id(named[g.weight])] for g in self.groups]

    def _prox_steps(self, named: Mapping[str, Tensor], pgs: Sequence[dict]) -> list[float] | list[Tensor]:
        return [pg["lr"] for pg in pgs]

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        named = dict(self._module.named_parameters())
        pgs = self._param_groups_of(named)
        for g, pg, lr in zip(self.groups, pgs, self._prox_steps(named, pgs), strict=True):
            prox_(named, [g], pg["lam"], [lr])
        return loss


class ProxSGD(_ProxMixin, torch.optim.SGD):
    """SGD followed by the group prox: ``ProxSGD(model, groups, lam=1e-3, lr=0.1, momentum=0.9)``."""


class ProxAdam(_ProxMixin, torch.optim.Adam):
    """Adam followed by the group prox with the layer's RMS-normalised Adam step as α:
    ``ProxAdam(model, groups, lam=1e-3, lr=1e-3)``."""

    def _prox_steps(self, named: Mapping[str, Tensor], pgs: Sequence[dict]) -> list[Tensor]:
        return adam_prox_steps(self, named, self.groups)

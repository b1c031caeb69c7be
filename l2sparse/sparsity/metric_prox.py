"""The group prox in a diagonal metric: the proximal step that follows an adaptive (Adam) update.

After an optimiser step that moves coordinate ``i`` by ``−g_i / d_i`` (SGD: ``d_i = 1/α``; Adam:
``d_i = (√v̂_i + ε) / lr``), the proximal step of ``λΩ`` in the same metric is, per group,

    W = argmin_W  ½ Σ_i d_i (W_i − Z_i)²  +  λ√size ‖W‖₂          (Z: the weights after the step)

(ProxGen, Yun et al., NeurIPS 2021). Its solution: ``W = 0`` iff ``‖d ⊙ Z‖₂ ≤ λ√size``; otherwise
``W_i = d_i Z_i r / (d_i r + λ√size)`` with ``r = ‖W‖₂`` the root of
``f(r) = Σ_i (d_i Z_i)² / (d_i r + λ√size)² − 1``, a convex decreasing function that Newton's method, started at the
lower bound ``max(0, ‖Z‖ − λ√size / min d)``, approaches monotonically. With one ``d`` for the whole group this is
the plain soft-threshold of [`prox`][l2sparse.sparsity.prox.prox] with step ``1/d``.

Hand-written because no library ships a group-lasso prox for a diagonal metric. A group dies when *its own*
gradient scale (through ``d``) and norm say so: the fixed points are those of ``L + λΩ`` whatever the metric
(zero iff ``‖∇_g L‖₂ ≤ λ√size``). Replacing ``d`` by one value per layer instead (``lr`` over the layer's gradient
RMS) made a layer whose gradients are small lose every group in one step: on CelebA attributes 63% of all groups,
four whole residual convs, died in the first meta-iteration and never came back.

After Adam, [`adam_prox_`][] measures λ relative to each layer's gradient scale ``s_l`` (the RMS of ``√v̂``): layer
``l`` uses ``λ s_l``, so a group dies when its gradient is weak *relative to its layer*, ``λ`` is unit-free and
means the same in every layer, and at ``λ ≈ 1`` the prox moves a weight about as far per step as Adam does. With
one absolute λ the layers with many input channels (small weights, small gradients) went first: at a 50% budget
the meta-init lost 95% of ``layer3.0.conv2``'s groups and none of ``layer1``'s, and adapted to unseen CelebA
attributes at a mean AUROC of 0.760 against 0.768 with the relative λ (1500 meta-iterations; dense 0.804).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from l2sparse.sparsity.groups import ConvGroups, group_matrix


def group_rows_to_params(rows: Tensor, g: ConvGroups, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of [`group_matrix`][l2sparse.sparsity.groups.group_matrix]: rows ``(num_groups, group_size)`` back
    to the layer's weight (and extras), shaped like the tensors in ``like``."""
    w = like[g.weight]
    n_w = w.numel() // w.shape[g.dim]
    body = rows[:, :n_w]
    rows_shape = (w.shape[1], w.shape[0], *w.shape[2:]) if g.dim == 1 else tuple(w.shape)
    weight = body.reshape(rows_shape)
    weight = weight.transpose(0, 1) if g.dim == 1 else weight
    out = {g.weight: weight.to(w.dtype).contiguous()}
    for k, e in enumerate(g.extras):
        out[e] = rows[:, n_w + k].to(like[e].dtype)
    return out


def solve_group_prox(z: Tensor, d: Tensor, tau: Tensor | float, iters: int = 100, tol: float = 1e-12) -> Tensor:
    """Rows of ``argmin_W ½ Σ d (W − z)² + τ ‖W‖₂`` for every row of ``z``.

    Args:
        z: ``(G, S)`` the groups after the gradient step.
        d: ``(G, S)`` positive metric (inverse per-coordinate step sizes).
        tau: threshold ``λ√size`` (a scalar, or ``(G,)``).
        iters: maximum Newton iterations.
        tol: relative change of ``r`` at which to stop.

    Returns:
        ``(G, S)`` in float64; rows with ``‖d ⊙ z‖ ≤ τ`` are exactly zero.
    """
    z, d = z.double(), d.double()
    tau = torch.as_tensor(tau, dtype=torch.float64, device=z.device).expand(z.shape[0]).unsqueeze(1)
    dz = d * z
    alive = torch.linalg.vector_norm(dz, dim=1, keepdim=True) > tau
    r = (torch.linalg.vector_norm(z, dim=1, keepdim=True) - tau / d.amin(dim=1, keepdim=True)).clamp_min(0)
    for _ in range(iters):
        den = d * r + tau
        f = (dz.square() / den.square()).sum(1, keepdim=True) - 1
        fp = -2 * (dz.square() * d / den.pow(3)).sum(1, keepdim=True)
        step = torch.where(alive, f / fp, torch.zeros_like(r))
        r = r - step
        if bool((step.abs() <= tol * r.clamp_min(1e-300)).all()):
            break
    return torch.where(alive, dz * r / (d * r + tau), torch.zeros_like(z))


@torch.no_grad()
def metric_prox(
    params: Mapping[str, Tensor],
    groups: Sequence[ConvGroups],
    lam: float | Tensor,
    metric: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """The group prox of ``λΩ`` in the diagonal metric ``metric`` (see the module docstring).

    Args:
        params: name -> tensor ``Z`` (weights after the optimiser's step); every name of ``groups``.
        groups: the channel groups.
        lam: λ ≥ 0, a scalar or one value per layer ``(num_layers,)``.
        metric: name -> positive tensor ``d`` shaped like the parameter (inverse step sizes), for every grouped
            name; e.g. from [`adam_metric`][l2sparse.sparsity.metric_prox.adam_metric].

    Returns:
        A new dict with the grouped tensors replaced by their proximal values, every other entry passed through.

    Forward-mode AD (``torch.autograd.forward_ad``) passes through ``params`` and ``lam``: the tangent of the
    result is the exact derivative of the prox (the Newton root's tangent converges with it).
    """
    out = dict(params)
    lams = torch.as_tensor(lam, dtype=torch.float64)
    lams = lams.expand(len(groups)) if lams.ndim == 0 else lams
    for layer, g in enumerate(groups):
        z = group_matrix(params, g)
        d = group_matrix(metric, g)
        tau = lams[layer].to(z.device) * g.group_size(params) ** 0.5
        out.update(group_rows_to_params(solve_group_prox(z, d, tau), g, params))
    return out


@torch.no_grad()
def adam_metric(optimizer: torch.optim.Optimizer, names: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Adam's metric ``d = (√v̂ + ε) / lr`` for every parameter in ``names`` that the optimiser has stepped.

    ``v̂ = v / (1 − β₂^t)`` is the bias-corrected second moment, so ``−m̂ / d`` is exactly Adam's last step.
    Parameters without Adam state yet get ``d = 1 / lr`` (a plain SGD prox).
    """
    info = {id(p): pg for pg in optimizer.param_groups for p in pg["params"]}
    out = {}
    for name, p in names.items():
        pg, state = info[id(p)], optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            out[name] = torch.full_like(p, 1.0 / pg["lr"])
            continue
        v = state["max_exp_avg_sq"] if pg.get("amsgrad") else state["exp_avg_sq"]
        v_hat = v / (1 - pg["betas"][1] ** float(state["step"]))
        out[name] = (v_hat.sqrt() + pg["eps"]) / pg["lr"]
    return out


@torch.no_grad()
def adam_prox_terms(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor], groups: Sequence[ConvGroups]
) -> tuple[dict[str, Tensor], Tensor]:
    """Adam's metric ``d`` for the grouped parameters and each layer's gradient scale ``s_l`` = the RMS of
    ``√v̂ + ε`` over the layer's grouped scalars, shape ``(num_layers,)`` float64 on the CPU."""
    grouped = {k: params[k] for g in groups for k in (g.weight, *g.extras)}
    metric = adam_metric(optimizer, grouped)
    lr = {id(p): pg["lr"] for pg in optimizer.param_groups for p in pg["params"]}
    scales = [
        (group_matrix(metric, g).double() * lr[id(params[g.weight])]).square().mean().sqrt().cpu() for g in groups
    ]
    return metric, torch.stack(scales)


@torch.no_grad()
def adam_prox_(
    model: torch.nn.Module, groups: Sequence[ConvGroups], lam: float | Tensor, optimizer: torch.optim.Optimizer
) -> None:
    """In place, after ``optimizer`` (an Adam) stepped ``model``: the exact group prox in Adam's metric, with λ
    relative to each layer's gradient scale: layer ``l`` uses ``λ_l · s_l`` ([`adam_prox_terms`][]).

    This one function is the prox of [`ProxAdam`][l2sparse.sparsity.optim.ProxAdam] and of the meta-init in
    meta-sparsity. ``lam``: a scalar or ``(num_layers,)``.
    """
    named = dict(model.named_parameters())
    for k, v in adam_prox(model, groups, lam, optimizer).items():
        named[k].copy_(v)


@torch.no_grad()
def adam_prox(
    model: torch.nn.Module,
    groups: Sequence[ConvGroups],
    lam: float | Tensor,
    optimizer: torch.optim.Optimizer,
    values: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The values [`adam_prox_`][] writes, ``{grouped name: tensor}``, without writing them. ``values`` replaces the
    model's grouped tensors as the point ``Z`` to take the prox of (e.g. the same values carrying forward-mode
    tangents, which pass through to the result); Adam's metric and the layer scales come from the model's parameters'
    state in ``optimizer``."""
    named = dict(model.named_parameters())
    metric, scales = adam_prox_terms(optimizer, named, groups)
    if values is None:
        values = {k: named[k] for g in groups for k in (g.weight, *g.extras)}
    return metric_prox(values, groups, torch.as_tensor(lam, dtype=torch.float64).to(scales.device) * scales, metric)


@torch.no_grad()
def death_lambdas(
    params: Mapping[str, Tensor], groups: Sequence[ConvGroups], metric: Mapping[str, Tensor]
) -> list[Tensor]:
    """Per layer, the smallest λ at which each group's prox in ``metric`` is exactly zero, ``‖d ⊙ Z_g‖₂ / √size``,
    shape ``(num_groups,)``: the group dies iff ``λ ≥`` this value."""
    out = []
    for g in groups:
        scaled = group_matrix(params, g).double() * group_matrix(metric, g).double()
        out.append(torch.linalg.vector_norm(scaled, dim=1) / g.group_size(params) ** 0.5)
    return out


@torch.no_grad()
def adam_death_lambdas(
    model: torch.nn.Module, groups: Sequence[ConvGroups], optimizer: torch.optim.Optimizer
) -> list[Tensor]:
    """[`death_lambdas`][] of [`adam_prox_`][] after ``optimizer``'s step, in its relative units (divided by each
    layer's gradient scale): group ``g`` of layer ``l`` dies iff ``λ_l ≥`` its value. Float64, on the CPU."""
    named = dict(model.named_parameters())
    metric, scales = adam_prox_terms(optimizer, named, groups)
    return [lam.cpu() / s for lam, s in zip(death_lambdas(named, groups, metric), scales, strict=True)]

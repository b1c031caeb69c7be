"""The λ-gradient through the meta-init's own prox: how the meta-init would differ had λ been larger.

The inner loops give λ a meta-gradient through the K proximal steps of each episode, but the meta-init's
sparsity comes from the prox that follows every outer Adam step
([`adam_prox_`][l2sparse.sparsity.metric_prox.adam_prox_]), and that prox is not part of any episode's graph.
Without this term nothing in λ's gradient says what a larger λ costs the init: measured from λ₀ = 1 (synthetic,
tiny), λ rose to 1.64 while the meta-init went 84% sparse, far past the grid search's best λ (docs/meta.md).

This module carries the tangent ``J_t = dθ_t / dρ`` of the meta-init's grouped weights forward through its
training (forward-mode hyperparameter gradients, Franceschi et al., ICML 2017), with two approximations:

    J_{t+1} = ∂P/∂Z · γ J_t  +  ∂P/∂ρ          P = the prox (and the kept filter norms) at Z = θ_t − Adam step

* the outer Adam step's own Jacobian is taken as the identity (its Hessian term, which pulls the weights back
  toward a minimum and so bounds how far λ can have moved them, is left out), and
* ``γ = 1 − 1/horizon`` forgets old steps instead: ``J`` measures λ's effect over about the last ``horizon``
  meta-iterations.

Both Jacobians of ``P`` are exact, by forward-mode AD through the Newton solve of the metric prox. A dead group's
tangent is zero. The meta-gradient of ρ then gains ``⟨dL/dθ_t, J_t⟩`` (per layer with one λ per layer): the
query loss's sensitivity to the init, times how the init moves with λ.

Hand-written: no library carries forward-mode hypergradients through a proximal optimiser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor, nn

from l2sparse.sparsity import ConvGroups
from l2sparse.sparsity.filter_norms import rescaled_filters
from l2sparse.sparsity.metric_prox import adam_prox


class InitTangent:
    """``J = dθ/dρ`` for the grouped weights of a meta-init, ``{name: tensor shaped like the weight}`` (float64).

    Example:
        ```python
        tangent = InitTangent(model, groups, horizon=100)
        # after backward and before opt.step():
        rho.grad += tangent.lambda_grad(model, rho.shape)
        opt.step()
        tangent.prox_(model, groups, lam, opt, norms)   # the meta-init's prox, in place, and the new J
        ```
    """

    def __init__(self, model: nn.Module, groups: Sequence[ConvGroups], horizon: float) -> None:
        if not horizon >= 1:
            raise ValueError(f"init-horizon: expected ≥ 1 meta-iterations, got {horizon}")
        named = dict(model.named_parameters())
        self.decay = 1.0 - 1.0 / horizon
        self.layer_of = {k: layer for layer, g in enumerate(groups) for k in (g.weight, *g.extras)}
        self.tangent = {k: torch.zeros_like(named[k], dtype=torch.float64) for k in self.layer_of}
        self.num_layers = len(groups)

    def lambda_grad(self, model: nn.Module, shape: torch.Size) -> Tensor:
        """``⟨dL/dθ, J⟩`` from the model's ``.grad``: per layer ``(num_layers,)`` when ``shape`` is that,
        summed to a scalar when ``shape`` is ``()``. Float64 on the tangent's device."""
        named = dict(model.named_parameters())
        per_layer = torch.zeros(self.num_layers, dtype=torch.float64, device=next(iter(self.tangent.values())).device)
        for k, j in self.tangent.items():
            g = named[k].grad
            if g is not None:
                per_layer[self.layer_of[k]] += (g.double() * j).sum()
        return per_layer.sum() if len(shape) == 0 else per_layer

    @torch.no_grad()
    def prox_(
        self,
        model: nn.Module,
        groups: Sequence[ConvGroups],
        lam: Tensor,
        optimizer: torch.optim.Optimizer,
        norms: Mapping[str, Tensor] | None,
    ) -> None:
        """In place, after ``optimizer``'s step: the meta-init's prox
        ([`adam_prox`][l2sparse.sparsity.metric_prox.adam_prox], then
        [`rescaled_filters`][l2sparse.sparsity.filter_norms.rescaled_filters] with ``norms``), the same values as
        ``adam_prox_`` and ``keep_filter_norms_``; and ``J ← ∂P/∂Z · γ J + ∂P/∂ρ`` (module docstring).
        ``lam``: ``λ = exp(ρ + ν)``, 0-d or ``(num_layers,)``; ``dλ/dρ = λ``."""
        named = dict(model.named_parameters())
        lam = lam.detach().double()
        with fwad.dual_level():
            values = {k: fwad.make_dual(named[k].double(), self.decay * j) for k, j in self.tangent.items()}
            out = adam_prox(model, groups, fwad.make_dual(lam, lam), optimizer, values)
            if norms:
                out.update(rescaled_filters(out, norms))
            for k, v in out.items():
                primal, tangent = fwad.unpack_dual(v)
                named[k].copy_(primal)
                self.tangent[k] = torch.zeros_like(primal) if tangent is None else tangent.clone()

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.tangent.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.tangent = {k: state[k].to(v) for k, v in self.tangent.items()}

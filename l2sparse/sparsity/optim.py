"""Optimisers that apply the group prox after every step: ``ProxSGD`` and ``ProxAdam``.

The prox must act in the metric of the step it follows, or its fixed points are not those of ``L + λΩ``:

* SGD with momentum ``μ`` (dampening ``δ``) moves a weight under a constant gradient ``g`` by ``α_t g`` with
  ``α_t = lr (μ^(t−1) + (1 − δ)(1 − μ^(t−1)) / (1 − μ))`` (``lr / (1 − μ)`` in the limit; Nesterov adds ``μ α_t``).
  The prox threshold uses ``α_t``; with the plain ``lr`` instead, the fixed point is the group lasso for
  ``λ (1 − μ)``, i.e. 10x weaker at μ = 0.9.
* Adam moves coordinate ``i`` by ``lr m̂_i / (√v̂_i + ε)``; the prox is the exact group prox in that diagonal
  metric ([`metric_prox`][l2sparse.sparsity.metric_prox.metric_prox]).

Then, by default, every output filter of a BatchNorm-followed conv is scaled back to its norm at construction
([`keep_filter_norms_`][l2sparse.sparsity.filter_norms.keep_filter_norms_]): the loss cannot see those norms, so
without it the penalty shrinks whole layers until every step rewrites them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from l2sparse.sparsity.filter_norms import filter_norms, keep_filter_norms_
from l2sparse.sparsity.groups import ConvGroups
from l2sparse.sparsity.metric_prox import adam_prox_
from l2sparse.sparsity.prox import prox_


def momentum_step_scale(t: int, momentum: float, dampening: float = 0.0, nesterov: bool = False) -> float:
    """How far ``t`` SGD steps under one constant gradient move the weights in the ``t``-th step, in units of lr:
    ``μ^(t−1) + (1 − δ)(1 − μ^(t−1)) / (1 − μ)`` (torch's buffer starts at the first gradient, undamped)."""
    if momentum == 0:
        return 1.0
    scale = momentum ** (t - 1) + (1 - dampening) * (1 - momentum ** (t - 1)) / (1 - momentum)
    return 1 + momentum * scale if nesterov else scale


class _ProxMixin:
    """After the wrapped optimiser's step, apply the group prox with each parameter's own ``lam``.

    ``model`` names the grouped parameters; ``params`` (default ``model.parameters()``) is what the optimiser
    updates, e.g. the model's parameters plus a loss-weighting module's. ``lam`` lives in the param groups, so it
    is saved in ``state_dict()`` and can be changed between steps. ``keep_norms`` (default True) holds the output
    filter norms of BatchNorm-followed grouped convs at their values at construction (saved in ``state_dict()``).
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ConvGroups],
        lam: float,
        lr: float,
        params: Iterable[Tensor] | Iterable[dict] | None = None,
        keep_norms: bool = True,
        **kwargs,
    ) -> None:
        if not lam >= 0 or lam == float("inf"):
            raise ValueError(f"lam: expected a finite λ ≥ 0, got {lam}")
        super().__init__(model.parameters() if params is None else params, lr=lr, **kwargs)
        self.groups = list(groups)
        self._module = model
        self.filter_norms = filter_norms(model, self.groups) if keep_norms else {}
        for pg in self.param_groups:
            pg.setdefault("lam", lam)
            pg.setdefault("prox_t", 0)

    def _param_groups_of(self, named: Mapping[str, Tensor]) -> list[dict]:
        """The param group holding each grouped layer's weight, in ``self.groups`` order."""
        by_id = {id(p): pg for pg in self.param_groups for p in pg["params"]}
        missing = [g.weight for g in self.groups if id(named[g.weight]) not in by_id]
        if missing:
            raise ValueError(f"grouped parameter {missing[0]!r} is not handled by this optimiser")
        return [by_id[id(named[g.weight])] for g in self.groups]

    def _prox(self, named: dict[str, Tensor], pgs: Sequence[dict]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for pg in self.param_groups:
            pg["prox_t"] += 1
        named = dict(self._module.named_parameters())
        self._prox(named, self._param_groups_of(named))
        keep_filter_norms_(named, self.filter_norms)
        return loss

    def state_dict(self) -> dict:
        return {**super().state_dict(), "filter_norms": {k: v.clone() for k, v in self.filter_norms.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        norms = state_dict.pop("filter_norms", None)
        super().load_state_dict(state_dict)
        if norms is not None:
            self.filter_norms = {
                k: v.to(self.filter_norms[k]) if k in self.filter_norms else v for k, v in norms.items()
            }


class ProxSGD(_ProxMixin, torch.optim.SGD):
    """SGD followed by the group prox with the momentum-aware step ``α_t`` (module docstring):
    ``ProxSGD(model, groups, lam=1e-3, lr=0.1, momentum=0.9)``."""

    def _prox(self, named: dict[str, Tensor], pgs: Sequence[dict]) -> None:
        for g, pg in zip(self.groups, pgs, strict=True):
            scale = momentum_step_scale(pg["prox_t"], pg["momentum"], pg["dampening"], pg["nesterov"])
            prox_(named, [g], pg["lam"], [pg["lr"] * scale])


class ProxAdam(_ProxMixin, torch.optim.Adam):
    """Adam followed by the exact group prox in Adam's diagonal metric ``(√v̂ + ε) / lr``:
    ``ProxAdam(model, groups, lam=1e-3, lr=1e-3)``."""

    def _prox(self, named: dict[str, Tensor], pgs: Sequence[dict]) -> None:
        adam_prox_(self._module, self.groups, torch.tensor([float(pg["lam"]) for pg in pgs]), self)

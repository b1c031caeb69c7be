"""Keep the norm of every output filter of a BatchNorm-followed conv fixed while the group prox acts on it.

A conv followed by BatchNorm computes the same function for ``W[i]`` and ``c · W[i]`` (any ``c > 0``): the loss
cannot see the scale of an output filter, so nothing resists the group penalty when it shrinks a whole layer. Under
a proximal optimiser the layer norm then falls until the optimiser's steps are as large as the weights
themselves and every step rewrites the layer. Measured on CelebA attributes (tiny model, 32 px, 600
meta-iterations, 50% group-sparsity budget): the conv norms fell 10–100x and the meta-init adapted to unseen
attributes at a mean AUROC of 0.644, below a random init's 0.740; with the filter norms kept, 0.762 (dense
meta-init: 0.777). Rescaling the weights of the failed run back to a normal scale before adaptation did not help
(0.624): the damage is done during training.

After every prox, each non-zero output filter ``W[i]`` is scaled back to its norm at the start of training. That
leaves the function of the network unchanged (BatchNorm in train mode renormalises it, up to its ε; exactly-zero
groups stay zero) and makes the group lasso act on the filter's *direction*, where λ has a fixed meaning.
Hand-written because it is a two-line projection specific to this penalty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from l2sparse.sparsity.groups import ConvGroups


@torch.no_grad()
def filter_norms(model: nn.Module | Mapping[str, Tensor], groups: Sequence[ConvGroups]) -> dict[str, Tensor]:
    """``{weight name: (C_out,) norms of its output filters}`` for every ``normalized`` grouped conv."""
    named = dict(model.named_parameters()) if isinstance(model, nn.Module) else model
    return {g.weight: named[g.weight].flatten(1).norm(dim=1).clone() for g in groups if g.normalized}


@torch.no_grad()
def keep_filter_norms_(model: nn.Module | Mapping[str, Tensor], norms: Mapping[str, Tensor]) -> None:
    """In place: scale every non-zero output filter ``W[i]`` named in ``norms`` back to ``norms[name][i]``."""
    named = dict(model.named_parameters()) if isinstance(model, nn.Module) else model
    for name, w in rescaled_filters(named, norms).items():
        named[name].copy_(w)


def rescaled_filters(params: Mapping[str, Tensor], norms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{name: W}`` for every name in ``norms``, each non-zero output filter ``W[i]`` of ``params[name]``
    ``(C_out, C_in, k, k)`` scaled to norm ``norms[name][i]``; a pure function (forward-mode tangents pass)."""
    out = {}
    for name, target in norms.items():
        w = params[name]
        r = w.flatten(1).norm(dim=1)
        scale = torch.where(r > 0, target.to(r) / r.clamp_min(torch.finfo(r.dtype).tiny), torch.ones_like(r))
        out[name] = w * scale.view(-1, *[1] * (w.ndim - 1))
    return out

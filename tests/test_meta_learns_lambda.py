"""λ is really learned: it rises where sparsity helps the query loss and falls where it does not.

Construction: a linear model ``y = x · w`` as a 1x1 conv over 16 input channels, so each input-channel group is one
weight. Each episode draws its own coefficients (mean 2, spread 0.5) and ``x ~ N(0, I)``, ``y = x·w + 0.1 noise``.

* Sparse problem: only channel 0 matters (15 channels are pure noise) and there are 4 support points for 16
  weights, so an unregularised inner loop fits the noise; zeroing the noise channels lowers the query loss.
* Dense problem: all 16 channels matter and there are 64 support points, so the inner loop can solve least squares
  well and any shrinkage only biases it.

The inner step α = 0.08 keeps the inner loop stable: with 4 support points in 16 dimensions the support loss's
Hessian has eigenvalues up to about 18, and α · 18 < 2.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2sparse.meta import InnerConfig, get_backend
from l2sparse.meta.init_tangent import InitTangent
from l2sparse.meta.metasparsity import meta_update
from l2sparse.sparsity import channel_groups
from l2sparse.tasks import Task

TASK = Task("y", "synthetic", "y", "pooled", 1, "torch.nn.functional:mse_loss", "depth")


class Linear(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(channels, 1, 1, bias=False)

    def forward(self, x: torch.Tensor, tasks=None) -> dict[str, torch.Tensor]:
        return {"y": self.backbone(x).flatten(1)}


def episodes(g: torch.Generator, relevant: int, support: int, query: int = 64, channels: int = 16, n: int = 4):
    out = []
    for _ in range(n):
        w = torch.zeros(channels)
        w[:relevant] = 2 + 0.5 * torch.randn(relevant, generator=g)
        x = torch.randn(support + query, channels, 1, 1, generator=g)
        y = (x.flatten(1) @ w)[:, None] + 0.1 * torch.randn(support + query, 1, generator=g)
        s, q = slice(0, support), slice(support, None)
        out.append({"train": {"image": x[s], "y": y[s]}, "test": {"image": x[q], "y": y[q]}, "tasks": ["y"]})
    return out


def meta_train(relevant: int, support: int, backend: str = "torchfunc", iters: int = 100, horizon: float = 0):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Linear(16)
    groups = channel_groups(model, shared="backbone")
    rho = torch.tensor(0.05).log().requires_grad_(True)
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": 0.05}, {"params": [rho], "lr": 0.05}])
    inner = InnerConfig(steps=5, lr=0.08)
    tangent = InitTangent(model, groups, horizon) if horizon else None
    for _ in range(iters):
        eps = episodes(g, relevant, support)
        meta_update(model, groups, rho, get_backend(backend), eps, [TASK], inner, opt, tangent=tangent)
    return rho.exp().item(), model.backbone.weight.detach().flatten()


@pytest.mark.parametrize(("backend", "horizon"), [("torchfunc", 0), ("higher", 0), ("torchfunc", 20)])
def test_lambda_rises_and_groups_die_when_sparsity_helps(backend, horizon):
    """Also with λ's gradient through the meta-init's own prox (``horizon`` > 0)."""
    lam, w = meta_train(relevant=1, support=4, backend=backend, horizon=horizon)
    assert lam > 3 * 0.05
    assert bool((w[1:] == 0).all())  # every noise channel's group of the meta-init is exactly zero
    assert 1.0 < w[0].item() < 3.0  # the relevant one is kept, near the coefficients' mean of 2


@pytest.mark.parametrize("horizon", [0, 20])
def test_lambda_falls_when_sparsity_hurts(horizon):
    lam, w = meta_train(relevant=16, support=64, horizon=horizon)
    assert lam < 0.05 / 3
    assert int((w == 0).sum()) == 0
    assert (w - 2).abs().max() < 0.5  # the meta-init learns the coefficients' mean

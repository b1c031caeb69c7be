"""The group prox in Adam's metric, the filter-norm projection, and planted structure found by ProxAdam."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from l2sparse.sparsity import ProxAdam, adam_metric, channel_groups, filter_norms, keep_filter_norms_, metric_prox
from l2sparse.sparsity.groups import ConvGroups, group_matrix
from l2sparse.sparsity.metric_prox import death_lambdas, group_rows_to_params, solve_group_prox


def test_solution_meets_the_optimality_condition_and_zeroes_exactly_below_the_threshold():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 12, generator=g, dtype=torch.float64)
    d = torch.rand(200, 12, generator=g, dtype=torch.float64) * 20 + 1e-3  # very uneven metrics
    tau = 35.0  # ‖d ⊙ z‖ is about 40: some groups die, most do not
    w = solve_group_prox(z, d, tau)
    alive = w.norm(dim=1) > 0
    assert 0 < int(alive.sum()) < 200
    # alive: d (w − z) + τ w / ‖w‖ = 0; dead: exactly when ‖d ⊙ z‖ ≤ τ
    residual = d * (w - z) + tau * w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
    assert residual[alive].abs().max() < 1e-10
    torch.testing.assert_close(alive, (d * z).norm(dim=1) > tau)


def test_solution_is_the_minimiser():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 6, generator=g, dtype=torch.float64)
    d = torch.rand(30, 6, generator=g, dtype=torch.float64) * 5 + 0.1
    tau = 1.5
    w = solve_group_prox(z, d, tau)

    def objective(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (d * (v - z) ** 2).sum(1) + tau * v.norm(dim=1)

    for _ in range(20):
        other = w + 1e-3 * torch.randn(w.shape, generator=g, dtype=torch.float64)
        assert bool((objective(w) <= objective(other) + 1e-12).all())


def test_one_metric_value_per_group_is_the_plain_soft_threshold():
    z = torch.randn(50, 9, dtype=torch.float64)
    w = solve_group_prox(z, torch.full_like(z, 4.0), 2.0)
    torch.testing.assert_close(w, z * torch.relu(1 - (2.0 / 4.0) / z.norm(dim=1, keepdim=True)))


@pytest.mark.parametrize("mode", ["in", "out"])
def test_group_rows_round_trip(mode):
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    params = dict(m.named_parameters())
    (g,) = channel_groups(m, shared="", mode=mode)
    back = group_rows_to_params(group_matrix(params, g), g, params)
    for name, value in back.items():
        torch.testing.assert_close(value, params[name])


def test_prox_adam_is_adam_then_the_exact_prox_in_adams_metric_with_lambda_relative_to_the_layer():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    groups = channel_groups(m, shared="")
    ref = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    ref.load_state_dict(m.state_dict())
    opt = ProxAdam(m, groups, lam=0.3, lr=0.1, keep_norms=False)
    plain = torch.optim.Adam(ref.parameters(), lr=0.1)
    x = torch.randn(8, 3, 4, 4)
    for _ in range(3):
        for model, o in ((m, opt), (ref, plain)):
            o.zero_grad()
            model(x).square().mean().backward()
            o.step()
        named = dict(ref.named_parameters())
        d = adam_metric(plain, {"0.weight": named["0.weight"]})
        scale = (d["0.weight"].double() * 0.1).square().mean().sqrt()  # the layer's gradient scale, RMS of √v̂ + ε
        with torch.no_grad():
            new = metric_prox({"0.weight": named["0.weight"]}, groups, 0.3 * scale, d)["0.weight"]
            named["0.weight"].copy_(new)
    torch.testing.assert_close(m[0].weight, ref[0].weight)
    # d = (√v̂ + ε) / lr: the same step Adam took
    state = plain.state[ref[0].weight]
    v_hat = state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))
    torch.testing.assert_close(d["0.weight"], (v_hat.sqrt() + 1e-8) / 0.1)


def test_death_lambdas_are_where_groups_die():
    torch.manual_seed(0)
    params = {"c.weight": torch.randn(4, 6, 3, 3)}
    metric = {"c.weight": torch.rand(4, 6, 3, 3) + 0.5}
    g = [ConvGroups("c", "c.weight", 1)]
    (thresholds,) = death_lambdas(params, g, metric)
    for j, lam in enumerate(thresholds.tolist()):
        below = metric_prox(params, g, lam * 0.999, metric)["c.weight"][:, j]
        above = metric_prox(params, g, lam * 1.001, metric)["c.weight"][:, j]
        assert bool(below.abs().sum() > 0) and bool((above == 0).all())


def test_kept_filter_norms_leave_a_batchnorm_network_unchanged_and_zeros_zero():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, eps=1e-12), nn.ReLU())  # ε: see below
    groups = channel_groups(m, shared="")
    norms = filter_norms(m, groups)
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        m[0].weight.mul_(torch.tensor([0.1, 3.0, 1.0, 0.5]).view(4, 1, 1, 1))
        m[0].weight[:, 1] = 0  # a dead input group
        before = m(x)
    keep_filter_norms_(m, norms)
    torch.testing.assert_close(m[0].weight.flatten(1).norm(dim=1), norms["0.weight"])
    assert bool((m[0].weight[:, 1] == 0).all())
    torch.testing.assert_close(m(x), before, atol=1e-5, rtol=1e-4)  # train-mode BN: the same function (up to its ε)
    assert filter_norms(nn.Conv2d(3, 4, 1), channel_groups(nn.Conv2d(3, 4, 1), shared="")) == {}  # no BN: no scale


class Planted(nn.Module):
    """conv 1x1 over 8 channels → BN → ReLU → global pool → linear: the grouped conv's input channels 0–3 carry the
    target, 4–7 are pure noise."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


def planted_batch(g: torch.Generator, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 8, 4, 4, generator=g)
    y = x[:, :4].mean(dim=(2, 3)) @ torch.tensor([1.0, -1.0, 0.5, 2.0])
    return x, y[:, None]


def test_prox_adam_zeroes_the_noise_channels_and_keeps_the_informative_ones():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Planted()
    groups = channel_groups(model)
    opt = ProxAdam(model, groups, lam=0.3, lr=0.01)
    sparsity = []
    for _ in range(400):
        x, y = planted_batch(g)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sparsity.append(int((model.backbone[0].weight == 0).flatten(1).all(dim=0).sum()))
    dead = (model.backbone[0].weight == 0).transpose(0, 1).flatten(1).all(dim=1)
    assert dead.tolist() == [False] * 4 + [True] * 4
    assert sparsity[0] == 0  # nothing dies at the first step
    assert max(b - a for a, b in itertools.pairwise(sparsity)) <= 2  # groups die a few at a time

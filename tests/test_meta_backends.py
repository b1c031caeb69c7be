"""Hypergradients of the proximal inner loop: finite differences, agreement across backends, modes, BatchNorm."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from l2sparse.data.episodes import EpisodeSampler
from l2sparse.data.synthetic import SyntheticScenes
from l2sparse.errors import ConfigError
from l2sparse.meta import InnerConfig, get_backend, importable
from l2sparse.meta.init_tangent import InitTangent
from l2sparse.meta.inner import episode_losses, total
from l2sparse.models import create_model
from l2sparse.sparsity import adam_prox_, channel_groups
from l2sparse.sparsity.metric_prox import adam_death_lambdas, adam_prox_terms
from l2sparse.tasks import load_registry

BACKENDS = ["torchfunc", "higher"] + (["learn2learn"] if importable("learn2learn") else [])


def smooth(model: nn.Module) -> nn.Module:
    """Every ReLU replaced by a GELU, so the inner gradients are smooth in the weights."""
    for m in model.modules():
        for name, child in m.named_children():
            if isinstance(child, nn.ReLU):
                setattr(m, name, nn.GELU())
    return model


@pytest.fixture(scope="module")
def problem():
    """A tiny float64 problem: the tiny model with GELU activations, three tasks with smooth losses (cross-entropy,
    cosine, BCE), one 4+4-image episode at 16 px. With ReLU and the L1 depth loss, the query loss jumps in ρ once
    K ≥ 2 (a kink inside an inner gradient), and finite differences only agree by luck.

    λ = exp(-0.5) with α = 0.1 puts the prox threshold among the group norms: some groups are zeroed inside the inner
    loop, none sits at the kink, so the loss is differentiable in ρ.
    """
    torch.manual_seed(0)
    tasks = load_registry().get("synthetic", ["semseg", "normals", "has_sphere"])
    data = SyntheticScenes("train", 16, 16).tensors()
    data = {k: v.double() if v.is_floating_point() else v for k, v in data.items()}
    episode = EpisodeSampler(data, tasks, 4, 4, subset=3, seed=0).episode()
    model = smooth(create_model("tiny", tasks)).double()
    return model, channel_groups(model), episode, tasks


def hypergrads(problem, backend: str, cfg: InnerConfig, rho0: float):
    model, groups, episode, tasks = problem
    model.zero_grad()
    rho = torch.tensor(rho0, dtype=torch.float64, requires_grad=True)
    loss = sum(get_backend(backend).query_losses(model, groups, rho.exp(), episode, tasks, cfg).values())
    loss.backward()
    return loss.item(), rho.grad.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def query_loss(problem, cfg: InnerConfig, rho: float) -> float:
    model, groups, episode, tasks = problem
    lam = torch.tensor(rho, dtype=torch.float64).exp()
    return sum(get_backend("torchfunc").query_losses(model, groups, lam, episode, tasks, cfg).values()).item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rho0", [-3.0, -0.5])
def test_second_order_hypergradient_matches_finite_differences(problem, backend, rho0):
    cfg = InnerConfig(steps=3, lr=0.1, order="second_order")
    _, d_rho, _ = hypergrads(problem, backend, cfg, rho0)
    h = 1e-5
    fd = (query_loss(problem, cfg, rho0 + h) - query_loss(problem, cfg, rho0 - h)) / (2 * h)
    assert abs(fd) > 1e-4, "the construction must give λ a real influence on the query loss"
    assert abs(d_rho - fd) / abs(fd) <= 1e-6


def test_lambda_gradient_through_the_meta_inits_prox_matches_finite_differences(problem):
    """The query loss from a meta-init that is itself the prox of ``Z`` with λ: its dL/dρ is the inner loops' term
    plus ``⟨dL/dθ, J⟩`` ([`InitTangent`][]), which together match central differences; the inner term alone does
    not."""
    base, groups, episode, tasks = problem
    model = copy.deepcopy(base)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    total(
        episode_losses(model(episode["train"]["image"], tasks=[t.name for t in tasks]), episode["train"], tasks)
    ).backward()
    opt.step()
    z = copy.deepcopy(model.state_dict())
    deaths = torch.cat(adam_death_lambdas(model, groups, opt)).sort().values
    k = len(deaths) // 4  # a λ that zeroes a quarter of the init's groups, none at the kink
    rho0, cfg = 0.5 * math.log(deaths[k] * deaths[k + 1]), InnerConfig(steps=2, lr=0.1)
    assert min(abs(math.log(d) - rho0) for d in deaths.tolist()) > 1e-3
    scales = adam_prox_terms(opt, dict(model.named_parameters()), groups)[1]  # λ relative in the inner loop too

    def loss_at(rho: float) -> float:
        model.load_state_dict(z)
        adam_prox_(model, groups, math.exp(rho), opt)
        lam = torch.tensor(rho, dtype=torch.float64).exp() * scales
        return sum(get_backend("torchfunc").query_losses(model, groups, lam, episode, tasks, cfg).values()).item()

    model.load_state_dict(z)
    tangent = InitTangent(model, groups, math.inf)
    tangent.prox_(model, groups, torch.tensor(rho0, dtype=torch.float64).exp(), opt, None)
    model.zero_grad()
    rho = torch.tensor(rho0, dtype=torch.float64, requires_grad=True)
    lam = rho.exp() * scales
    sum(get_backend("torchfunc").query_losses(model, groups, lam, episode, tasks, cfg).values()).backward()
    inner = rho.grad.item()
    full = inner + tangent.lambda_grad(model, rho.shape).item()
    h = 1e-6  # the Newton solve's tangent converges like the central difference, O(h²): 8e-5 at 1e-5, 8e-7 at 1e-6
    fd = (loss_at(rho0 + h) - loss_at(rho0 - h)) / (2 * h)
    assert abs(full - fd) <= 1e-5 * abs(fd)
    assert abs(inner - fd) > 0.5 * abs(fd)


def test_central_differences_converge_at_second_order(problem):
    """In a smooth setting the error of the central difference falls like h²: halving h quarters it. (Without the
    GELU and smooth losses it does not, and agreement at one h is luck.)"""
    cfg = InnerConfig(steps=3, lr=0.1, order="second_order")
    _, d_rho, _ = hypergrads(problem, "torchfunc", cfg, -0.5)

    def error(h: float) -> float:
        return abs((query_loss(problem, cfg, -0.5 + h) - query_loss(problem, cfg, -0.5 - h)) / (2 * h) - d_rho)

    ratio = error(2e-2) / error(1e-2)
    assert 3.5 < ratio < 4.5


@pytest.mark.parametrize("order", ["second_order", "first_order", "truncated"])
def test_backends_agree(problem, order):
    cfg = InnerConfig(steps=3, lr=0.1, order=order, truncate=2)
    ref_loss, ref_rho, ref_params = hypergrads(problem, "torchfunc", cfg, -0.5)
    for backend in BACKENDS[1:]:
        loss, d_rho, params = hypergrads(problem, backend, cfg, -0.5)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        assert d_rho == pytest.approx(ref_rho, rel=1e-6)
        assert params.keys() == ref_params.keys()
        for n in params:
            torch.testing.assert_close(params[n], ref_params[n], rtol=1e-6, atol=1e-9)


def test_first_order_is_the_documented_approximation(problem):
    """First order treats inner gradients as constants but keeps the λ path through every prox:
    with one inner step the gradient does not depend on λ, so dL/dρ is exact; dL/dθ₀ is not (it drops the Hessian)."""
    one = {o: hypergrads(problem, "torchfunc", InnerConfig(1, 0.1, o), -0.5) for o in ("second_order", "first_order")}
    assert one["first_order"][1] == pytest.approx(one["second_order"][1], rel=1e-10)
    w = "backbone.layer1.0.conv1.conv.weight"
    assert not torch.allclose(one["first_order"][2][w], one["second_order"][2][w])
    two = {o: hypergrads(problem, "torchfunc", InnerConfig(2, 0.1, o), -3.0) for o in ("second_order", "first_order")}
    assert two["first_order"][1] != pytest.approx(two["second_order"][1], rel=1e-3)
    truncated_all = hypergrads(problem, "torchfunc", InnerConfig(2, 0.1, "truncated", truncate=2), -3.0)
    assert truncated_all[1] == pytest.approx(two["second_order"][1], rel=1e-12)  # T = K is exact


@pytest.mark.parametrize("rho0", [-3.0, -1.5, -0.5, 0.5])
def test_the_cheap_lambda_exact_mode_matches_second_order_on_several_rho(problem, rho0):
    """``truncated`` with T = K − 1 detaches only the first inner gradient, which λ has not touched yet: its dL/dρ is
    exact (while dL/dθ₀ drops one Hessian term). First order with K = 3 is not, and meta-training refuses it."""
    exact = hypergrads(problem, "torchfunc", InnerConfig(3, 0.1, "second_order"), rho0)[1]
    cheap = InnerConfig(3, 0.1, "truncated", truncate=2)
    assert cheap.lambda_exact and not InnerConfig(3, 0.1, "first_order").lambda_exact
    assert InnerConfig(1, 0.1, "first_order").lambda_exact
    assert hypergrads(problem, "torchfunc", cheap, rho0)[1] == pytest.approx(exact, rel=1e-10)


def test_meta_training_refuses_a_lambda_gradient_that_is_not_exact():
    from l2sparse.meta.metasparsity import MetaConfig

    with pytest.raises(ConfigError, match="order: first_order with 3 inner steps gives a λ-gradient that ignores"):
        MetaConfig(order="first_order", inner_steps=3).validate()
    MetaConfig(order="first_order", inner_steps=3, learn_lambda=False, lam_init=0.01).validate()  # fixed λ: fine
    MetaConfig(order="truncated", inner_steps=3, truncate=2).validate()


def test_inner_loops_leave_batchnorm_running_stats_alone(problem):
    model, _, _, _ = problem
    before = {n: b.clone() for n, b in model.named_buffers()}
    for backend in BACKENDS:
        hypergrads(problem, backend, InnerConfig(2, 0.1), -1.0)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bad_backend_and_inner_settings():
    with pytest.raises(ConfigError, match=r"unknown backend 'jax'; valid backends: torchfunc \(importable\), higher"):
        get_backend("jax")
    with pytest.raises(ConfigError, match="inner-steps: expected ≥ 1, got 0"):
        InnerConfig(steps=0)
    with pytest.raises(ConfigError, match="order: expected one of second_order, first_order, truncated"):
        InnerConfig(order="zeroth")


@pytest.mark.skipif(importable("learn2learn"), reason="learn2learn is importable: the missing-library path is moot")
def test_learn2learn_absent_says_why_and_how():
    with pytest.raises(ConfigError, match=r"backend 'learn2learn' is not importable here .*pip install learn2learn"):
        get_backend("learn2learn")

"""Hypergradients of the proximal inner loop: finite differences, agreement across backends, modes, BatchNorm."""

from __future__ import annotations

import pytest
import torch

from l2sparse.data.episodes import EpisodeSampler
from l2sparse.data.synthetic import SyntheticScenes
from l2sparse.meta import InnerConfig, get_backend, importable
from l2sparse.models import create_model
from l2sparse.sparsity import channel_groups
from l2sparse.tasks import load_registry

BACKENDS = ["torchfunc", "higher"] + (["learn2learn"] if importable("learn2learn") else [])
L2L_ABSENT = "learn2learn is not importable here (it needs torchvision and a Python where its C extensions build)"


@pytest.fixture(scope="module")
def problem():
    """A tiny float64 problem: the tiny model, three tasks, one 4+4-image episode at 16 px.

    λ = exp(-0.5) with α = 0.1 puts the prox threshold among the group norms: some groups are zeroed inside the inner
    loop, none sits at the kink, so the loss is differentiable in ρ.
    """
    torch.manual_seed(0)
    tasks = load_registry().get("synthetic", ["semseg", "depth", "has_sphere"])
    data = SyntheticScenes("train", 16, 16).tensors()
    data = {k: v.double() if v.is_floating_point() else v for k, v in data.items()}
    episode = EpisodeSampler(data, tasks, 4, 4, subset=3, seed=0).episode()
    model = create_model("tiny", tasks).double()
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
    cfg = InnerConfig(steps=2, lr=0.1, order="second_order")
    _, d_rho, _ = hypergrads(problem, backend, cfg, rho0)
    h = 1e-5
    fd = (query_loss(problem, cfg, rho0 + h) - query_loss(problem, cfg, rho0 - h)) / (2 * h)
    assert abs(fd) > 1e-4, "the construction must give λ a real influence on the query loss"
    assert abs(d_rho - fd) / abs(fd) <= 1e-4


@pytest.mark.parametrize("order", ["second_order", "first_order", "truncated"])
def test_backends_agree(problem, order):
    cfg = InnerConfig(steps=3, lr=0.1, order=order, truncate=2)
    ref_loss, ref_rho, ref_params = hypergrads(problem, "torchfunc", cfg, -0.5)
    for backend in BACKENDS[1:]:
        loss, d_rho, params = hypergrads(problem, backend, cfg, -0.5)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        assert abs(d_rho - ref_rho) <= 1e-6 * max(1.0, abs(ref_rho))
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


def test_inner_loops_leave_batchnorm_running_stats_alone(problem):
    model, _, _, _ = problem
    before = {n: b.clone() for n, b in model.named_buffers()}
    for backend in BACKENDS:
        hypergrads(problem, backend, InnerConfig(2, 0.1), -1.0)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bad_backend_and_inner_settings():
    with pytest.raises(ValueError, match=r"unknown backend 'jax'; valid backends: torchfunc \(importable\), higher"):
        get_backend("jax")
    with pytest.raises(ValueError, match="inner-steps: expected ≥ 1, got 0"):
        InnerConfig(steps=0)
    with pytest.raises(ValueError, match="order: expected one of second_order, first_order, truncated"):
        InnerConfig(order="zeroth")


@pytest.mark.skipif(importable("learn2learn"), reason="learn2learn is importable: the missing-library path is moot")
def test_learn2learn_absent_says_why_and_how():
    with pytest.raises(ImportError, match=r"backend 'learn2learn' is not importable here .*pip install learn2learn"):
        get_backend("learn2learn")


@pytest.mark.skipif(not importable("learn2learn"), reason=L2L_ABSENT)
def test_learn2learn_agrees_with_torchfunc(problem):
    for order in ("second_order", "first_order"):
        cfg = InnerConfig(steps=2, lr=0.1, order=order)
        _, ref, _ = hypergrads(problem, "torchfunc", cfg, -0.5)
        _, got, _ = hypergrads(problem, "learn2learn", cfg, -0.5)
        assert abs(got - ref) <= 1e-6 * max(1.0, abs(ref))

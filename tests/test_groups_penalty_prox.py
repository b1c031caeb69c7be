"""Channel groups, the group-lasso penalty and the group soft-threshold, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from l2sparse.models import create_model
from l2sparse.sparsity import ProxAdam, ProxSGD, channel_groups, group_norms, penalty, prox, prox_
from l2sparse.sparsity.groups import ConvGroups
from l2sparse.sparsity.optim import momentum_step_scale
from l2sparse.tasks import load_registry


def conv_bn(weight: torch.Tensor) -> nn.Sequential:
    """A 1x1 conv (C_out=2, C_in=3) with the given weight, followed by a BatchNorm."""
    m = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2))
    with torch.no_grad():
        m[0].weight.copy_(weight.view(2, 3, 1, 1))
    return m


W = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, 1.0]])  # input-channel columns have norms 5, 0, √2


def test_input_groups_are_columns_and_penalty_matches_hand_value():
    m = conv_bn(W)
    groups = channel_groups(m, shared="")
    assert groups == [ConvGroups("0", "0.weight", 1, normalized=True)]  # a BatchNorm follows the conv
    assert groups[0].group_size(dict(m.named_parameters())) == 2
    torch.testing.assert_close(group_norms(dict(m.named_parameters()), groups[0]), torch.tensor([5.0, 0.0, 2**0.5]))
    # Ω = √2 · (5 + 0 + √2) = 5√2 + 2
    assert penalty(m, groups).item() == pytest.approx(5 * 2**0.5 + 2)
    assert penalty(m, groups, lam=0.1).item() == pytest.approx(0.1 * (5 * 2**0.5 + 2))


def test_output_groups_include_batchnorm_affine():
    m = conv_bn(W)
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([1.0, 2.0]))
        m[1].bias.copy_(torch.tensor([0.0, 2.0]))
    groups = channel_groups(m, shared="", mode="out")
    assert groups[0].extras == ("1.weight", "1.bias")
    params = dict(m.named_parameters())
    assert groups[0].group_size(params) == 5
    # rows: [3, 0, 1, γ=1, β=0] -> √11 ; [4, 0, 1, γ=2, β=2] -> √25 = 5
    torch.testing.assert_close(group_norms(params, groups[0]), torch.tensor([11**0.5, 5.0]))
    assert penalty(m, groups).item() == pytest.approx(5**0.5 * (11**0.5 + 5))


def test_output_groups_follow_the_declared_wiring_not_module_order():
    """A block that registers its BatchNorm before its conv: the backbone's ``channel_spaces()`` still pairs them,
    so the BatchNorm's γ, β join the conv's output groups (module order would pair the conv with the ReLU)."""
    tasks = load_registry().get("synthetic", ["depth"])
    model = create_model("tiny", tasks)
    unit = model.backbone.layer1[0].conv1
    unit._modules = {"bn": unit.bn, "conv": unit.conv, "act": unit.act}
    g = next(g for g in channel_groups(model, mode="out") if g.layer == "backbone.layer1.0.conv1.conv")
    assert g.extras == ("backbone.layer1.0.conv1.bn.weight", "backbone.layer1.0.conv1.bn.bias") and g.normalized
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))  # no wiring declared
    first, last = channel_groups(plain, shared="", mode="out")
    assert first.extras == ("0.bias", "1.weight", "1.bias") and first.normalized
    assert last.extras == ("2.bias",) and not last.normalized


def test_prox_matches_hand_value_and_zeroes_small_groups():
    params = {"0.weight": W.view(2, 3, 1, 1)}
    g = [ConvGroups("0", "0.weight", 1)]
    # threshold αλ√size = 1 · √2 · √2 = 2: column norm 5 -> scaled by 1 − 2/5; norm √2 < 2 -> zero; zero stays zero
    out = prox(params, g, lam=2**0.5, lr=1.0)["0.weight"].view(2, 3)
    torch.testing.assert_close(out, torch.tensor([[1.8, 0.0, 0.0], [2.4, 0.0, 0.0]]))


def test_prox_zeroes_exactly_the_groups_under_threshold():
    w = torch.randn(8, 20, 3, 3) * torch.linspace(0.01, 0.1, 20).view(1, -1, 1, 1)  # group norms ~0.08 to ~0.8
    g = [ConvGroups("c", "c.weight", 1)]
    lam, lr = 0.05, 0.5
    thr = lr * lam * (8 * 9) ** 0.5
    norms = w.transpose(0, 1).flatten(1).norm(dim=1)
    assert ((norms <= thr).sum() > 0) and ((norms > thr).sum() > 0), "the draw must straddle the threshold"
    out = prox({"c.weight": w}, g, lam, lr)["c.weight"]
    zero = (out == 0).all(dim=(0, 2, 3))
    assert torch.equal(zero, norms <= thr)
    torch.testing.assert_close(out[:, ~zero], w[:, ~zero] * (1 - thr / norms[~zero]).view(1, -1, 1, 1))


def test_prox_per_layer_lambda_and_passthrough():
    a, b = torch.randn(4, 3, 1, 1), torch.randn(4, 4, 1, 1)
    head = torch.randn(5)
    groups = [ConvGroups("a", "a.weight", 1), ConvGroups("b", "b.weight", 1)]
    out = prox({"a.weight": a, "b.weight": b, "head": head}, groups, torch.tensor([0.0, 1e3]), lr=1.0)
    assert torch.equal(out["a.weight"], a)  # λ = 0 leaves the layer as it is
    assert (out["b.weight"] == 0).all()  # a huge λ zeroes every group
    assert out["head"] is head
    with pytest.raises(ValueError, match="per-layer"):
        prox({"a.weight": a, "b.weight": b}, groups, torch.ones(3), lr=1.0)


def test_penalty_gradient_passes_gradcheck():
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    g = [ConvGroups("c", "c.weight", 1)]
    assert torch.autograd.gradcheck(lambda w: penalty({"c.weight": w}, g), (w,))


def test_prox_is_differentiable_in_lambda_and_weights():
    torch.manual_seed(1)
    w = torch.randn(3, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    g = [ConvGroups("c", "c.weight", 1)]
    norms = w.detach().transpose(0, 1).flatten(1).norm(dim=1)
    # choose λ so the threshold sits between two group norms (some groups zero, none at the kink)
    lr, thr = 0.5, norms.sort().values[2:4].mean().item()
    lam = torch.tensor(thr / (lr * 27**0.5), dtype=torch.float64, requires_grad=True)  # group size 3 * 3 * 3
    out = prox({"c.weight": w}, g, lam, lr)["c.weight"]
    assert 0 < int((out == 0).all(dim=(0, 2, 3)).sum()) < 6
    fn = lambda lam, w: prox({"c.weight": w}, g, lam, lr)["c.weight"]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (lam, w))
    assert torch.autograd.gradgradcheck(fn, (lam, w))  # second-order meta-gradients go through here


def test_channel_groups_shared_selection():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=2)))
    model.add_module("head", nn.Conv2d(4, 2, 1))
    names = [g.layer for g in channel_groups(model)]
    assert names == ["backbone.0"]  # the head is not shared; depthwise/grouped convs are not grouped
    assert [g.layer for g in channel_groups(model, shared=model.head)] == ["head"]
    assert [g.layer for g in channel_groups(model, shared=lambda n: n.endswith("0"))] == ["backbone.0"]
    with pytest.raises(ValueError, match=r"no submodule named 'trunk'.*backbone, head"):
        channel_groups(model, shared="trunk")
    with pytest.raises(ValueError, match="mode"):
        channel_groups(model, mode="channel")


def test_prox_sgd_is_momentum_sgd_step_then_prox_with_the_momentum_step():
    torch.manual_seed(0)
    m = conv_bn(torch.randn(2, 3))
    ref = conv_bn(m[0].weight.detach().view(2, 3))
    groups = channel_groups(m, shared="")
    x = torch.randn(4, 3, 5, 5)
    opt = ProxSGD(m, groups, lam=0.3, lr=0.1, momentum=0.9, keep_norms=False)
    buf = {}
    for t in range(1, 4):
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()
        ref.zero_grad()
        ref(x).square().mean().backward()
        with torch.no_grad():
            for name, p in ref.named_parameters():
                buf[name] = p.grad.clone() if name not in buf else 0.9 * buf[name] + p.grad
                p -= 0.1 * buf[name]
        prox_(ref, groups, 0.3, 0.1 * (1 - 0.9**t) / (1 - 0.9))  # α_t: how far t steps move under one gradient
    torch.testing.assert_close(m[0].weight, ref[0].weight)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_prox_sgd_converges_to_the_group_lasso_solution_with_and_without_momentum(momentum):
    """One 1x1 weight, loss ½(w − 1)², λ = 0.5: the group lasso solution is w = 1 − λ = 0.5 (a threshold of plain
    lr·λ with momentum 0.9 converges to 0.95, the solution for λ(1 − μ))."""
    m = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        m[0].weight.fill_(2.0)
    opt = ProxSGD(m, channel_groups(m, shared=""), lam=0.5, lr=0.05, momentum=momentum)
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * (m[0].weight.sum() - 1) ** 2).backward()
        opt.step()
    assert m[0].weight.item() == pytest.approx(0.5, abs=1e-5)


def test_momentum_step_scale():
    assert momentum_step_scale(1, 0.9) == 1.0  # torch's buffer starts at the first gradient
    assert momentum_step_scale(2, 0.9) == pytest.approx(1.9)
    assert momentum_step_scale(10**6, 0.9) == pytest.approx(10.0)  # lr / (1 − μ)
    assert momentum_step_scale(10**6, 0.9, dampening=0.5) == pytest.approx(5.0)
    assert momentum_step_scale(10**6, 0.9, nesterov=True) == pytest.approx(10.0)
    assert momentum_step_scale(7, 0.0) == 1.0


def test_prox_adam_state_and_lambda_survive_a_state_dict_round_trip():
    def run(steps_before: int, steps_after: int, reload: bool) -> torch.Tensor:
        torch.manual_seed(0)
        m = conv_bn(torch.randn(2, 3))
        groups = channel_groups(m, shared="")
        opt = ProxAdam(m, groups, lam=0.2, lr=0.05)
        x = torch.randn(8, 3, 4, 4)
        for i in range(steps_before + steps_after):
            if reload and i == steps_before:
                state = {"m": m.state_dict(), "o": opt.state_dict()}
                m = conv_bn(torch.zeros(2, 3))
                m.load_state_dict(state["m"])
                opt = ProxAdam(m, groups, lam=999.0, lr=0.05)
                opt.load_state_dict(state["o"])
                assert opt.param_groups[0]["lam"] == 0.2
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        return m[0].weight.detach()

    torch.testing.assert_close(run(5, 5, reload=True), run(5, 5, reload=False))


def test_negative_lambda_is_rejected():
    m = conv_bn(W)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite λ ≥ 0"):
            ProxSGD(m, channel_groups(m, shared=""), lam=bad, lr=0.1)


def test_penalty_on_module_equals_penalty_on_dict():
    m = conv_bn(torch.randn(2, 3))
    g = channel_groups(m, shared="")
    assert math.isclose(penalty(m, g).item(), penalty(dict(m.named_parameters()), g).item())


def test_prox_names_missing_parameters_and_rejects_negative_step():
    g = [ConvGroups("c", "c.weight", 1)]
    with pytest.raises(KeyError, match=r"params lacks 'c\.weight'"):
        prox({"backbone.c.weight": torch.ones(2, 2, 1, 1)}, g, 0.1, 1.0)
    with pytest.raises(ValueError, match="lr ≥ 0"):
        prox({"c.weight": torch.ones(2, 2, 1, 1)}, g, 0.1, -1.0)

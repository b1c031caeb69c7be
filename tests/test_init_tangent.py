"""The meta-init's tangent dθ/dρ: the same prox values as the in-place prox, and exact derivatives."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from l2sparse.meta.init_tangent import InitTangent
from l2sparse.models import create_model
from l2sparse.sparsity import adam_prox_, channel_groups, filter_norms, keep_filter_norms_
from l2sparse.sparsity.metric_prox import adam_death_lambdas
from l2sparse.tasks import load_registry


def stepped():
    """The tiny model in float64 after one Adam step on a random loss (so Adam has a metric), its groups, the
    optimiser, the filter norms at the start, and a λ between two groups' death λ (no group at the prox's kink)."""
    torch.manual_seed(0)
    tasks = load_registry().get("synthetic", ["semseg", "depth"])
    model = create_model("tiny", tasks).double()
    groups = channel_groups(model)
    norms = filter_norms(model, groups)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = model(torch.randn(4, 3, 16, 16, dtype=torch.float64), tasks=[t.name for t in tasks])
    sum(v.square().mean() for v in out.values()).backward()
    opt.step()
    deaths = torch.cat(adam_death_lambdas(model, groups, opt)).sort().values
    k = len(deaths) // 3
    lam = math.sqrt(deaths[k] * deaths[k + 1])
    assert min(abs(math.log(d / lam)) for d in deaths.tolist()) > 1e-4
    return model, groups, opt, norms, lam


def grouped(model, tangent):
    named = dict(model.named_parameters())
    return {k: named[k].detach().clone() for k in tangent.tangent}


def test_the_prox_writes_the_same_values_as_the_in_place_prox():
    model, groups, opt, norms, lam = stepped()
    reference = copy.deepcopy(model)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    ref_opt.load_state_dict(opt.state_dict())
    adam_prox_(reference, groups, lam, ref_opt)
    keep_filter_norms_(reference, norms)
    tangent = InitTangent(model, groups, horizon=10)
    tangent.prox_(model, groups, torch.tensor(lam, dtype=torch.float64), opt, norms)
    got, want = dict(model.named_parameters()), dict(reference.named_parameters())
    dead = 0
    for k in tangent.tangent:
        assert torch.allclose(got[k], want[k], rtol=1e-12, atol=1e-14), k
        dead += int((got[k] == 0).sum())
        assert bool((tangent.tangent[k][got[k] == 0] == 0).all())  # a dead weight has no tangent
    assert dead > 0  # the λ zeroes some groups


def two_proxes(model, groups, opt, norms, rho: float, shift: dict, tangent: InitTangent | None = None):
    """θ = P(P(Z, ρ) + shift, ρ): two meta-init proxes around a fixed outer step ``shift``."""
    named = dict(model.named_parameters())
    lam = torch.tensor(rho, dtype=torch.float64).exp()
    for second in (False, True):
        if second:
            with torch.no_grad():
                for k, v in shift.items():
                    named[k].add_(v)
        if tangent is None:
            adam_prox_(model, groups, lam, opt)
            keep_filter_norms_(model, norms)
        else:
            tangent.prox_(model, groups, lam, opt, norms)
    return {k: named[k].detach().clone() for k in shift}


@pytest.mark.parametrize(("horizon", "exact_chain"), [(math.inf, True), (1.0, False)])
def test_the_tangent_is_the_derivative_of_the_init_in_rho(horizon, exact_chain):
    """With no forgetting (horizon ∞) J is dθ/dρ through both proxes, chain rule included (finite differences);
    with horizon 1 the first prox is forgotten and J is the second prox's own ∂P/∂ρ at its input."""
    model, groups, opt, norms, lam = stepped()
    start = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(1)
    tangent = InitTangent(model, groups, horizon)
    shift = {k: 1e-2 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in grouped(model, tangent).items()}
    rho = math.log(lam)
    two_proxes(model, groups, opt, norms, rho, shift, tangent)
    h = 1e-6
    if exact_chain:
        values = []
        for r in (rho + h, rho - h):
            model.load_state_dict(start)
            values.append(two_proxes(model, groups, opt, norms, r, shift))
    else:
        model.load_state_dict(start)
        adam_prox_(model, groups, lam, opt)
        keep_filter_norms_(model, norms)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in shift.items():
                named[k].add_(v)
        mid = copy.deepcopy(model.state_dict())
        values = []
        for r in (rho + h, rho - h):
            model.load_state_dict(mid)
            adam_prox_(model, groups, math.exp(r), opt)
            keep_filter_norms_(model, norms)
            values.append(grouped(model, tangent))
    scale = max(j.abs().max() for j in tangent.tangent.values())
    assert scale > 1e-3
    for k, j in tangent.tangent.items():
        fd = (values[0][k] - values[1][k]) / (2 * h)
        assert (j - fd).abs().max() <= 1e-6 * scale, k


def test_a_bad_horizon_is_refused():
    model, groups, *_ = stepped()
    with pytest.raises(ValueError, match="init-horizon: expected ≥ 1"):
        InitTangent(model, groups, 0.5)


def test_the_lambda_gradient_is_per_layer_or_summed():
    model, groups, opt, norms, lam = stepped()
    tangent = InitTangent(model, groups, horizon=10)
    tangent.prox_(model, groups, torch.tensor(lam, dtype=torch.float64), opt, norms)
    g = torch.Generator().manual_seed(2)
    named = dict(model.named_parameters())
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    per_layer = tangent.lambda_grad(model, torch.Size([len(groups)]))
    want = [sum((named[k].grad * tangent.tangent[k]).sum() for k in (grp.weight, *grp.extras)) for grp in groups]
    assert per_layer.shape == (len(groups),) and torch.allclose(per_layer, torch.stack(want))
    assert torch.allclose(tangent.lambda_grad(model, torch.Size([])), per_layer.sum())
    assert int((per_layer != 0).sum()) > len(groups) // 2

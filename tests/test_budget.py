"""The size budget of meta-sparsity: its schedule, the exact multiplier, and targets met on a small run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2sparse.errors import ConfigError
from l2sparse.meta.budget import Budget
from l2sparse.meta.metasparsity import MetaConfig, MetaSparsity
from l2sparse.meta_train import main as meta_train_main
from l2sparse.sparsity import channel_groups, sparsity_report
from l2sparse.sparsity.report import conv_macs


def test_cubic_schedule():
    b = Budget(0.6, ramp=10)
    assert b.target_at(0) == 0 and b.target_at(10) == pytest.approx(0.6) and b.target_at(50) == pytest.approx(0.6)
    assert b.target_at(1) == pytest.approx(0.6 * (1 - 0.9**3))
    assert [b.target_at(t) for t in range(11)] == sorted(b.target_at(t) for t in range(11))
    m = Budget(0.25, kind="macs", ramp=4)
    assert m.target_at(0) == 1.0 and m.target_at(4) == pytest.approx(0.25)
    assert Budget(0.3).target_at(1) == pytest.approx(0.3)  # no ramp


def test_bad_budgets_name_their_option():
    with pytest.raises(ConfigError, match=r"budget: expected a fraction in \[0, 1\], got 1.5"):
        Budget(1.5)
    with pytest.raises(ConfigError, match=r"budget-macs: expected a fraction in \[0, 1\], got -0.1"):
        Budget(-0.1, kind="macs")
    with pytest.raises(ConfigError, match="budget-ramp"):
        MetaConfig(budget=0.5, budget_ramp=2.0).validate()
    with pytest.raises(ConfigError, match="give one size target, not both"):
        MetaConfig(budget=0.5, budget_macs=0.5).validate()


class Convs(nn.Module):
    """Two convs with BatchNorm; ``channel_spaces`` lets the MAC budget count them."""

    def __init__(self) -> None:
        super().__init__()
        from l2sparse.models.layers import ConvBNAct

        self.backbone = nn.Sequential(ConvBNAct(3, 8), ConvBNAct(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def channel_spaces(self):
        from l2sparse.sparsity.spaces import SpaceBuilder

        b = SpaceBuilder()
        cur = b.new(pinned=True)
        for unit in self.backbone:
            cur = b.conv_bn(cur, unit)
        b.spaces[cur].pinned = True
        return b.spaces


def stepped(seed: int = 0) -> tuple[nn.Module, list, torch.optim.Adam, torch.Tensor]:
    torch.manual_seed(seed)
    model = Convs()
    groups = channel_groups(model)
    rho = torch.tensor(-3.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3, 8, 8)).square().mean().backward()
    opt.step()
    return model, groups, opt, rho


@pytest.mark.parametrize("target", [0.0, 0.25, 0.5, 0.9])
def test_the_solved_multiplier_kills_exactly_the_target_count(target):
    from l2sparse.sparsity import adam_prox_

    model, groups, opt, rho = stepped()
    nu = Budget(target).solve_nu(model, groups, rho, opt, iteration=1, image_size=8)
    adam_prox_(model, groups, (rho + nu).exp(), opt)
    n = 3 + 8
    assert sparsity_report(model, groups)["group"] == pytest.approx(round(target * n) / n)


def test_the_mac_budget_kills_the_fewest_groups_that_fit():
    from l2sparse.sparsity import adam_prox_
    from l2sparse.sparsity.metric_prox import adam_death_lambdas

    model, groups, opt, rho = stepped()
    nu = Budget(0.5, kind="macs").solve_nu(model, groups, rho, opt, iteration=1, image_size=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adam_prox_(model, groups, (rho + nu).exp(), opt)
    dense, small = conv_macs(model, (3, 8, 8))
    assert small / dense <= 0.5
    killed = sparsity_report(model, groups)["per_layer"]
    k = sum(v["zero_groups"] for v in killed.values())
    # one group fewer does not fit: a multiplier just below the k-th group's death λ
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(before[n])
    kth = torch.sort(torch.cat(adam_death_lambdas(model, groups, opt))).values[k - 1]
    adam_prox_(model, groups, kth * (1 - 1e-5), opt)
    dense, small = conv_macs(model, (3, 8, 8))
    assert small / dense > 0.5


@pytest.mark.parametrize(("option", "target"), [("budget", 0.5), ("budget_macs", 0.4)])
def test_a_small_meta_run_ends_within_three_points_of_its_budget(tmp_path, option, target):
    cfg = MetaConfig(meta_iters=8, train_size=32, image_size=16, support=4, query=4, budget_ramp=0.5)
    setattr(cfg, option, target)
    trainer = MetaSparsity(cfg, tmp_path / "run")
    trainer.train(progress=False)
    measured = trainer.log[-1]["budget_measured"]
    assert measured == pytest.approx(target, abs=0.03)
    n_groups = sum(v["groups"] for v in sparsity_report(trainer.model, trainer.groups)["per_layer"].values())
    if option == "budget":  # every iteration meets its scheduled target, to one group
        for e in trainer.log:
            assert e["group_sparsity"] == pytest.approx(e["budget_target"], abs=1 / n_groups)


def test_mac_budget_of_a_model_that_cannot_be_counted_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(TypeError, match="cannot be counted"):
        conv_macs(nn.Sequential(nn.Conv2d(3, 4, 1)), (3, 8, 8))
    with pytest.raises(SystemExit) as e:
        meta_train_main(["--budget", "1.5", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "budget: expected a fraction in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

"""The shared minibatch loop: which steps run, what the hooks see, and a blow-up stopping it before the step."""

from __future__ import annotations

import pytest
import torch

from l2sparse.engine import Loop, fit
from l2sparse.errors import BlowUpError


def linear_problem():
    """Least squares ``w·x ≈ 2x`` on 8 points: ``loss_of(idx)`` is the mean squared error on ``x[idx]``."""
    x = torch.linspace(-1, 1, 8)
    w = torch.zeros((), requires_grad=True)
    return w, lambda idx: ((w * x[idx] - 2 * x[idx]) ** 2).mean()


def test_steps_after_start_run_and_hooks_see_each_in_order():
    w, loss_of = linear_problem()
    seen = []
    loop = Loop(8, 4, torch.Generator().manual_seed(0), torch.device("cpu"), "test", "lower --lr")
    last = fit(torch.optim.SGD([w], lr=0.5), loss_of, loop, steps=40, start=10, hooks=[lambda s, loss: seen.append(s)])
    assert seen == list(range(11, 41))
    assert w.item() == pytest.approx(2.0, abs=1e-3) and last.item() < 1e-6
    assert fit(torch.optim.SGD([w], lr=0.5), loss_of, loop, steps=5, start=5) is None  # nothing left to do


def test_the_indices_come_from_the_loops_generator():
    """Same generator state, same batches: a resumed run that restores the generator continues the same stream."""
    drawn = []
    w, loss_of = linear_problem()

    def recording(idx):
        drawn.append(idx.tolist())
        return loss_of(idx)

    for _ in range(2):
        loop = Loop(8, 3, torch.Generator().manual_seed(7), torch.device("cpu"), "test", "lower --lr")
        fit(torch.optim.SGD([w], lr=0.0), recording, loop, steps=3)
    assert drawn[:3] == drawn[3:] and all(0 <= i < 8 for b in drawn for i in b) and len(drawn[0]) == 3


def test_a_non_finite_loss_stops_before_the_step():
    w, _ = linear_problem()
    loop = Loop(8, 2, torch.Generator().manual_seed(0), torch.device("cpu"), "adapt (depth, seed 1)", "lower --lr")
    with pytest.raises(BlowUpError, match=r"adapt \(depth, seed 1\): loss = nan at step 3 .*lower --lr"):
        fit(torch.optim.SGD([w], lr=0.1), lambda idx: w * 0 + float("nan"), loop, steps=5, start=2)
    assert w.item() == 0.0

"""The shared minibatch loop: which steps run, what the hooks see, and a blow-up stopping it before the step; the
one batch format its losses and evaluation read."""

from __future__ import annotations

import pytest
import torch

from l2sparse.data import make_dataset
from l2sparse.data.splits import load_split
from l2sparse.engine import Loop, evaluate, fit, task_losses
from l2sparse.errors import BlowUpError
from l2sparse.models import create_model
from l2sparse.tasks import load_registry
from l2sparse.train import TrainConfig


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


def test_a_split_holds_each_tasks_prepared_target_under_its_name():
    """One batch format: ``load_split`` applies each task's column selection once; ``evaluate`` and
    ``task_losses`` read the target by task name and agree with the loss on the dataset's own keys."""
    tasks = load_registry().get("synthetic", ["has_box", "semseg"])
    cfg = TrainConfig(image_size=16)
    data = load_split(cfg, "train", 6, tasks, torch.device("cpu"))
    raw = make_dataset("synthetic", "train", None, 16, 6, 0, {t.target for t in tasks}).tensors()
    assert set(data) == {"image", "has_box", "semseg"}
    assert data["has_box"].shape == (6, 1)  # one column selected from the (6, A) attributes
    for t in tasks:
        assert torch.equal(data[t.name], t.target_of(raw))
    torch.manual_seed(0)
    model = create_model("tiny", tasks).eval()
    losses = task_losses(model, tasks, data)
    metrics = evaluate(model, tasks, data, batch_size=4)  # two batches, the second one short
    for t in tasks:
        direct = t.loss_fn(model(raw["image"], [t.name])[t.name], t.target_of(raw))
        assert losses[t.name].item() == pytest.approx(direct.item(), rel=1e-6)
        assert metrics[t.name]["loss"] == pytest.approx(direct.item(), rel=1e-5)

"""Shared fixtures: tiny task lists and models so every test stays fast on a 2-core CPU."""

from __future__ import annotations

import pytest
import torch

from l2sparse.models import create_model
from l2sparse.tasks import load_registry


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def tasks():
    return load_registry().get("synthetic", ["semseg", "depth", "attributes"])


@pytest.fixture
def tiny(tasks):
    return create_model("tiny", tasks)


def zero_input_groups(model, fraction: float, seed: int = 0) -> None:
    """Zero a random ``fraction`` of every grouped conv's input-channel groups, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.Conv2d):
                mask = torch.rand(m.in_channels, generator=g) < fraction
                m.weight[:, mask] = 0

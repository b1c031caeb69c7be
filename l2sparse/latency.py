"""Latency of a model's forward pass, measured the same way by every command."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import benchmark


@torch.no_grad()
def latency_ms(model: nn.Module, image_size: int, device: torch.device) -> float:
    """Median time of one forward pass on a single image, in milliseconds."""
    model.eval()
    x = torch.rand(1, 3, image_size, image_size, device=device)
    timer = benchmark.Timer("model(x)", globals={"model": model, "x": x})
    return 1e3 * timer.blocked_autorange(min_run_time=0.2).median

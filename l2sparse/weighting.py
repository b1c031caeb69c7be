"""How per-task losses are combined into one training loss.

Both weightings *average* over the tasks, as the meta-sparsity losses do, so that λ (which multiplies Ω added to
this loss) means the same in the fixed-λ trainer and in meta-training whatever the number of tasks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EqualWeighting(nn.Module):
    """``(1/T) Σ_t L_t``."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        return torch.stack([losses[t] for t in self.tasks]).mean()


class UncertaintyWeighting(nn.Module):
    """Homoscedastic uncertainty weighting (Kendall et al. 2018, LibMTL form), averaged over the tasks:
    ``(1/T) Σ_t [L_t / (2 exp(s_t)) + s_t / 2]`` with learnable ``s_t = log σ_t²`` (initialised at 0)."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[t] for t in self.tasks])
        return (stacked / (2 * self.log_vars.exp()) + self.log_vars / 2).mean()


WEIGHTINGS = {"equal": EqualWeighting, "uncertainty": UncertaintyWeighting}

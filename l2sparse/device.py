"""Device selection: ``auto`` picks CUDA when present; asking for ``cuda`` without it is an error, not a fallback."""

from __future__ import annotations

import torch

from l2sparse.errors import ConfigError
from l2sparse.guards import require_one_of

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    require_one_of("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: --device cuda was asked for but no CUDA device is available (use cpu or auto)")
    return torch.device(name)

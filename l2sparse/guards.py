"""Checks that stop a command with a one-line error before it writes something wrong: options that are not finite,
an output folder that cannot be written, and losses, λ or weights that blew up to NaN or ±inf during training.

Every error here is a ``ValueError`` naming the option, the folder or the training step, so the commands turn it
into ``prog: error: ...`` and exit code 2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


class BlowUpError(ValueError):
    """A loss, λ or weight that became NaN or infinite during training."""


def require_finite(config: object, names: Sequence[str]) -> None:
    """Raise ``ValueError("lam: expected a finite number, got inf")`` for the first option that is NaN or ±inf
    (options set to ``None`` are skipped)."""
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name.replace('_', '-')}: expected a finite number, got {v}")


def require_writable(out: str | Path, option: str = "out") -> None:
    """``out`` must be a folder this process can write into, or be creatable: its nearest existing ancestor must be
    a writable folder. Raises ``ValueError`` naming ``option`` otherwise (checked before any training)."""
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{option}: {path} exists and is not a directory")
        base = path
    else:
        base = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        if not base.is_dir():
            raise ValueError(f"{option}: cannot create {path}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: cannot write into {base} (permission denied)")


def nonfinite(values: Mapping[str, float | Tensor]) -> list[str]:
    """The names of the entries that hold a NaN or an infinity."""
    return [k for k, v in values.items() if not bool(torch.isfinite(torch.as_tensor(v).detach()).all())]


def _first_nonfinite(value: float | Tensor) -> float:
    t = torch.as_tensor(value).detach().flatten()
    return float(t[~torch.isfinite(t)][0])


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers of ``model`` that hold a NaN or an infinity."""
    tensors: Iterable[tuple[str, Tensor]] = [*model.named_parameters(), *model.named_buffers()]
    return [n for n, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(
    what: str,
    step: int,
    values: Mapping[str, float | Tensor],
    fix: str,
    checkpoint: Path | None = None,
    unit: str = "step",
) -> None:
    """Raise [`BlowUpError`][] naming the step, the values that are not finite, the option to change (``fix``) and,
    for a run that checkpoints, the last good checkpoint:
    ``train: loss = nan at step 7 (not finite); lower --lr (last good checkpoint: runs/x/checkpoint.pt)``."""
    bad = nonfinite(values)
    if bad:
        shown = ", ".join(f"{k} = {_first_nonfinite(values[k])}" for k in bad)
        raise BlowUpError(f"{what}: {shown} at {unit} {step} (not finite); {fix}{_last_good(checkpoint)}")


def check_finite_model(
    what: str, step: int, model: nn.Module, fix: str, checkpoint: Path | None = None, unit: str = "step"
) -> None:
    """Raise [`BlowUpError`][] if any weight or buffer of ``model`` is NaN or infinite (checked before a
    checkpoint is written, so the file on disk stays the last good one)."""
    bad = nonfinite_weights(model)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise BlowUpError(
            f"{what}: weights {bad[0]}{more} at {unit} {step} (not finite); {fix}{_last_good(checkpoint)}"
        )


def _last_good(checkpoint: Path | None) -> str:
    if checkpoint is None:
        return ""
    if checkpoint.is_file():
        return f" (last good checkpoint: {checkpoint})"
    return " (no checkpoint was written before it)"

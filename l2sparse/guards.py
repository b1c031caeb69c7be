"""Checks that stop a command with a one-line error before it writes something wrong: options that are not finite,
an output folder that cannot be written, and losses, λ or weights that blew up to NaN or ±inf during training.

Every error here is a [`UserError`][l2sparse.errors.UserError] (``ConfigError`` or ``BlowUpError``) naming the option,
the folder or the training step, so the commands turn it into ``prog: error: ...`` and exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from l2sparse.errors import BlowUpError, ConfigError

MAX_INT = 2**63 - 1  # what torch seeds and sizes accept


def require_one_of(option: str, value: object, valid: Sequence[str]) -> None:
    """``ConfigError`` ``<option>: expected one of <valid>, got <value>`` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{option}: expected one of {', '.join(valid)}, got {value!r}")


def check_numbers(config: object) -> None:
    """The check every command's configuration passes first: each float field (or list of floats) must be finite and
    each int field an integer in 0..2⁶³−1 (sizes, steps, counts and seeds are never negative). Raises ``ConfigError``
    naming the option, e.g. ``seed: expected an integer ≥ 0, got -7``. Ranges particular to one option (``lr > 0``,
    a fraction in [0, 1]) are checked where the option is declared."""
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        option = f.name.replace("_", "-")
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, bool):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{option}: expected a finite number, got {v}")
            if isinstance(v, int) and not 0 <= v <= MAX_INT:
                raise ConfigError(f"{option}: expected an integer ≥ 0, got {v}")


def require_writable(out: str | Path, option: str = "out") -> None:
    """``out`` must be a folder this process can write into, or be creatable: its nearest existing ancestor must be
    a writable folder. Raises ``ConfigError`` naming ``option`` otherwise (checked before any training)."""
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{option}: {path} exists and is not a directory")
        base = path
    else:
        base = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        if not base.is_dir():
            raise ConfigError(f"{option}: cannot create {path}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: cannot write into {base} (permission denied)")


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
    for a run that checkpoints, the last good checkpoint, e.g. ``train: loss = nan at step 7 (not finite); lower the
    learning rate ... (last good checkpoint: runs/x/checkpoint.pt)``."""
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

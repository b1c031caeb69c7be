"""Atomic checkpoint files: written to a temporary file in the same folder, synced, then renamed over the target,
so an interrupted write never leaves a truncated checkpoint behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, truncated or of another run."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` with ``torch.save`` atomically to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint on the CPU; raise [`CheckpointError`][] naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(e).__name__})") from e
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def check_resumable(saved: dict[str, Any], current: dict[str, Any], may_change: tuple[str, ...], path: Path) -> None:
    """Raise [`CheckpointError`][] naming the options that differ from the saved run's (except ``may_change``)."""
    changed = sorted(k for k, v in current.items() if k not in may_change and saved.get(k) != v)
    if changed:
        raise CheckpointError(
            f"{path}: saved with different {', '.join(changed)}; resume with the same options "
            f"(only {', '.join(may_change)} may change)"
        )

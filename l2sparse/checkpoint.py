"""Atomic checkpoint and report files: written to a temporary file in the same folder, synced, then renamed over
the target, so an interrupted write never leaves a truncated file behind.

Each writer's temporary file carries its process id and host (``.checkpoint.pt.<pid>@<host>.<random>.tmp``), so
two processes never share one, and the temporary files of writers on this host that no longer run (killed
mid-write) are removed by the next write to the same target (a writer on another host is never judged from here).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from l2sparse.errors import CheckpointError
from l2sparse.guards import nonfinite


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files that writers of ``path`` left behind when they were killed (their process is
    gone); returns what was removed. Temporary files of live writers are kept."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*@*.tmp"):
        pid, _, host = tmp.name[len(path.name) + 2 : -len(".tmp")].rsplit(".", 1)[0].partition("@")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _atomic_write(path: Path, write) -> None:
    """Call ``write(binary file)`` on a fresh temporary file next to ``path``, sync it and rename it over ``path``."""
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}@{socket.gethostname()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
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


@contextlib.contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``folder`` (an advisory ``fcntl.flock`` on ``.<name>.lock`` beside
    it) while the block runs, so two processes that fill the same cache entry take turns and the second finds the
    first one's result instead of racing it. Five lines of the standard library, so no dependency for it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` with ``torch.save`` atomically to ``path``."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def save_text(text: str, path: str | Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure to ``path`` atomically, in the format its suffix names (``.png``)."""
    path = Path(path)
    _atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip("."), dpi=dpi))


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or ±inf float replaced by ``None`` (``null`` in JSON), at any depth."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def save_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically.

    A value that is not a finite number can only be an *undefined* metric here (AUROC or F1 on a test set without
    positives, say): it is written as ``null``, never as the non-standard ``NaN``. Blow-ups during training never
    reach a report: the training loops stop at them ([`check_finite`][l2sparse.guards.check_finite])."""
    text = json.dumps(strict_json(obj), indent=2, allow_nan=False).encode()
    _atomic_write(Path(path), lambda f: f.write(text))


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint on the CPU; raise [`CheckpointError`][] naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt: {type(e).__name__}); delete it to start again"
        ) from e
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    model = state.get("model") if isinstance(state, dict) else None
    if isinstance(model, dict):
        bad = nonfinite({k: v for k, v in model.items() if torch.is_tensor(v)})
        if bad:
            raise CheckpointError(f"{path}: model weights {bad[0]} hold NaN or infinite values; delete the file")
    return state


def check_resumable(saved: Any, current: dict[str, Any], may_change: tuple[str, ...], path: Path) -> None:
    """Raise [`CheckpointError`][] naming the options that differ from the saved run's (except ``may_change``), or
    if the saved config is not a mapping at all."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: its config is not a mapping; delete it or choose another --out")
    changed = sorted(k for k, v in current.items() if k not in may_change and saved.get(k) != v)
    if changed:
        raise CheckpointError(
            f"{path}: saved with different {', '.join(changed)}; resume with the same options "
            f"(only {', '.join(may_change)} may change)"
        )

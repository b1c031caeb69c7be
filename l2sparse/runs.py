"""The run folder: where one training run keeps its ``checkpoint.pt`` and ``report.json``.

One object answers the questions every command asks of its ``--out`` (may a new run start here, may this one be
resumed, is a finished run with exactly this config already here) and names the cache entries that ``adapt``
fills, keyed by the config *and* the contents of the task files it reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2sparse import __version__
from l2sparse.checkpoint import check_resumable, load_checkpoint, locked
from l2sparse.errors import CheckpointError, ConfigError
from l2sparse.guards import require_writable
from l2sparse.tasks import task_files_digest


def cache_key(config: Mapping[str, Any]) -> str:
    """Cache key of a configuration (with its ``tasks_dir``): the library version and the task files' contents
    are part of it, so an upgrade or an edited task file retrains."""
    stamp = {"l2sparse": __version__, "task_files": task_files_digest(config["tasks_dir"])}
    return hashlib.sha256(json.dumps({**config, **stamp}, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunFolder:
    """A run's folder: ``checkpoint.pt`` (atomic, resumable) and, once the run has finished, ``report.json``."""

    path: Path

    @classmethod
    def cached(cls, root: str | Path, kind: str, config: Mapping[str, Any]) -> RunFolder:
        """The cache entry ``root/<kind>-<cache_key(config)>``."""
        return cls(Path(root) / f"{kind}-{cache_key(config)}")

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    def start(
        self,
        resume: bool,
        config: Mapping[str, Any],
        keys: Sequence[str],
        resumable: Sequence[str],
        task_files: str | None = None,
    ) -> dict | None:
        """Claim the folder for a run of ``config``: the saved state to continue from with ``resume`` (holding
        ``keys``, saved with the same config up to the ``resumable`` options and, when given, the same
        ``task_files`` digest), else None for a fresh run.

        Raises:
            ConfigError: the folder cannot be written, or it already holds a run and ``resume`` is not set.
            CheckpointError: ``resume`` with a missing, corrupt or mismatching checkpoint, or one saved while the
                task files read different.
        """
        require_writable(self.path)
        if resume:
            state = load_checkpoint(self.checkpoint, ("config", *keys))
            check_resumable(state["config"], dict(config), resumable, self.checkpoint)
            if task_files is not None and state.get("task_files", task_files) != task_files:
                raise CheckpointError(
                    f"{self.checkpoint}: saved while its task files read differently (a task or split file changed "
                    "since); choose another --out or delete the folder to retrain"
                )
            return state
        if self.checkpoint.exists():
            raise ConfigError(
                f"out: {self.path} already holds a run; pass --resume to continue it or choose another --out"
            )
        return None

    def finished(self, config: Mapping[str, Any], task_files: str | None = None) -> dict | None:
        """The report of a run here that finished with exactly ``config`` (and, when given, the task files whose
        digest is ``task_files``), else None.

        Raises:
            CheckpointError: a ``report.json`` that is not readable JSON.
        """
        if not self.report.exists():
            return None
        try:
            report = json.loads(self.report.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.report}: not a readable report ({e}); delete it to retrain") from e
        if not isinstance(report, dict) or report.get("config") != dict(config):
            return None
        return report if task_files is None or report.get("task_files") == task_files else None

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's lock ([`locked`][l2sparse.checkpoint.locked]) while the block runs."""
        with locked(self.path):
            yield self

"""The task registry: the built-in task files (``l2sparse/tasks/builtin/``, package data) plus any folders a user
points at.

Every ``*.toml`` file below a folder is a task, except those inside a folder named ``splits``, which are splits.
Adding a task means adding one file; nothing under ``l2sparse/`` changes.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from l2sparse.data import DATASETS
from l2sparse.errors import ConfigError, TaskFileError
from l2sparse.tasks.spec import Split, Task, parse_split, parse_task

# package data, shipped in the wheel; l2sparse is installed as files (not zipped), so this is a real folder
BUILTIN_DIR = Path(str(resources.files("l2sparse.tasks") / "builtin"))


@dataclass
class Registry:
    """Tasks by dataset and name, and splits by name."""

    tasks: dict[str, dict[str, Task]] = field(default_factory=dict)
    splits: dict[str, Split] = field(default_factory=dict)

    def get(self, dataset: str, names: Iterable[str] | None = None) -> list[Task]:
        """Tasks of ``dataset`` called ``names`` (all when ``None``); unknown names list the valid ones."""
        available = self.tasks.get(dataset, {})
        if names is None:
            if not available:
                raise ConfigError(
                    f"dataset {dataset!r} has no tasks; known datasets with tasks: {', '.join(self.tasks)}"
                )
            return list(available.values())
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if n not in available]
        if unknown or not names:
            raise ConfigError(
                f"unknown task(s) {unknown or names} for dataset {dataset!r}; valid tasks: {', '.join(available)}"
            )
        return [available[n] for n in names]

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise ConfigError(f"unknown split {name!r}; valid splits: {', '.join(sorted(self.splits))}")
        return self.splits[name]

    def split_of(self, name: str, dataset: str) -> Split:
        """The split ``name``, which must belong to ``dataset``."""
        split = self.split(name)
        if split.dataset != dataset:
            raise ConfigError(f"split: {name!r} belongs to dataset {split.dataset!r}, not {dataset!r}")
        return split

    def seen(self, split: str) -> list[Task]:
        s = self.split(split)
        return self.get(s.dataset, s.seen)

    def unseen(self, split: str) -> list[Task]:
        s = self.split(split)
        return self.get(s.dataset, s.unseen)


def task_folders(tasks_dirs: str | Path | Sequence[str | Path] | None = None) -> list[Path]:
    """The folders a registry reads, in order: the built-in one, then ``tasks_dirs`` (one folder or several)."""
    extra = [] if tasks_dirs is None else [tasks_dirs] if isinstance(tasks_dirs, str | Path) else list(tasks_dirs)
    return [BUILTIN_DIR, *map(Path, extra)]


def task_files_digest(tasks_dirs: str | Path | Sequence[str | Path] | None = None) -> str:
    """SHA-256 (hex) of every task and split file that [`load_registry`][l2sparse.tasks.load_registry] reads for
    ``tasks_dirs``: their paths below their folder and their bytes. A cache of trained inits keyed by it is
    retrained when a task file changes; Python code a task file names (``transform``, ``loss``) is not part of it."""
    h = hashlib.sha256()
    for i, folder in enumerate(task_folders(tasks_dirs)):
        for path in sorted(folder.rglob("*.toml")) if folder.is_dir() else []:
            h.update(f"{i}:{path.relative_to(folder).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TaskFileError(f"{path}: not valid TOML ({e})") from e
    except OSError as e:
        raise TaskFileError(f"{path}: cannot be read as a task file ({e.strerror})") from e


def load_registry(tasks_dirs: str | Path | Sequence[str | Path] | None = None) -> Registry:
    """Load the built-in task folder and then ``tasks_dirs`` (a later folder may not redefine a task or split).

    Raises:
        TaskFileError: a file that is not valid TOML, has a missing or unknown field, names an unknown dataset, or
            a split naming tasks its dataset does not have.
    """
    reg = Registry()
    for folder in task_folders(tasks_dirs):
        if not folder.is_dir():
            raise TaskFileError(f"{folder}: tasks folder does not exist")
        for path in sorted(folder.rglob("*.toml")):
            raw = _read(path)
            dataset = raw.get("dataset")
            if isinstance(dataset, str) and dataset not in DATASETS:
                raise TaskFileError(f"{path}: unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
            if "splits" in path.relative_to(folder).parts[:-1]:
                split = parse_split(raw, str(path))
                if split.name in reg.splits:
                    raise TaskFileError(
                        f"{path}: split {split.name!r} already defined in {reg.splits[split.name].source}"
                    )
                reg.splits[split.name] = split
                continue
            entry = DATASETS.get(dataset) if isinstance(dataset, str) else None
            task = parse_task(raw, str(path), entry.attribute_names if entry else (), entry.merges if entry else {})
            if entry is not None and task.target not in entry.targets:
                valid = ", ".join(entry.targets)
                raise TaskFileError(
                    f"{path}: target {task.target!r} is not in {dataset!r} items; valid targets: {valid}"
                )
            known = reg.tasks.setdefault(task.dataset, {})
            if task.name in known:
                raise TaskFileError(f"{path}: task {task.name!r} already defined in {known[task.name].source}")
            known[task.name] = task
    for split in reg.splits.values():
        missing = [t for t in (*split.seen, *split.unseen) if t not in reg.tasks.get(split.dataset, {})]
        if missing:
            raise TaskFileError(f"{split.source}: unknown task(s) {missing} for dataset {split.dataset!r}")
        if not split.seen:
            raise TaskFileError(f"{split.source}: a split needs at least one seen task")
    return reg

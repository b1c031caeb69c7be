"""Task definitions as data files, and the registry that loads them (``python -m l2sparse.tasks list``)."""

from l2sparse.errors import TaskFileError
from l2sparse.tasks.registry import BUILTIN_DIR, Registry, load_registry, task_files_digest
from l2sparse.tasks.spec import Split, Task

__all__ = ["BUILTIN_DIR", "Registry", "Split", "Task", "TaskFileError", "load_registry", "task_files_digest"]

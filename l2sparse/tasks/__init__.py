"""Task definitions: what a task predicts, with which head, loss and metrics."""

from l2sparse.tasks.spec import Task, resolve_tasks

__all__ = ["Task", "resolve_tasks"]

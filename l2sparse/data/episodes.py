"""Episode samplers in torchmeta's batch convention.

An episode is ``{"train": {...}, "test": {...}, "tasks": [names]}`` where ``"train"`` is the support batch and
``"test"`` the query batch, each ``{"image": (N, 3, H, W), <task>: target, ...}`` with one target per task of the
episode (already selected, class-merged and transformed by
[`Task.target_of`][l2sparse.tasks.spec.Task.target_of]). Support and query never share an image.

* [`EpisodeSampler`][] draws meta-train episodes: a subset of a split's *seen* tasks plus disjoint support and
  query images from the meta-train images.
* [`MetaTestSampler`][] serves each *unseen* task with its own training images (``shots`` of them) and its own
  test images, for adaptation and evaluation.

Hand-written rather than taken from torchmeta (unmaintained, pins old torch versions): the sampler is a few lines
over stacked tensors, and its generator state is checkpointed so resumed meta-training draws the same episodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from l2sparse.data.splits import task_view
from l2sparse.errors import ConfigError
from l2sparse.tasks import Task

Batch = dict[str, Tensor]


def task_batch(data: Mapping[str, Tensor], idx: Tensor, tasks: Sequence[Task]) -> Batch:
    """Images ``data["image"][idx]`` and each task's target for them: ``{"image": ..., task.name: ...}``."""
    return task_view({k: v[idx] for k, v in data.items()}, tasks)


class EpisodeSampler:
    """Meta-train episodes over seen tasks.

    Args:
        data: the meta-train images and targets, ``{key: (N, ...)}``.
        tasks: the seen tasks.
        support: support images per episode.
        query: query images per episode (disjoint from the support images).
        subset: ``"all"`` draws the task subset uniformly among all non-empty subsets; an int ``k`` draws ``k``
            distinct tasks.
        meta_batch: episodes per [`sample`][] call.
        seed: seed of the sampler's own generator.
    """

    def __init__(
        self,
        data: Mapping[str, Tensor],
        tasks: Sequence[Task],
        support: int,
        query: int,
        subset: str | int = "all",
        meta_batch: int = 1,
        seed: int = 0,
    ) -> None:
        if not tasks:
            raise ConfigError("episodes: no seen tasks to sample from")
        n = len(data["image"])
        if support < 1 or query < 1 or support + query > n:
            raise ConfigError(f"episodes: support ({support}) + query ({query}) must be ≥ 1 each and ≤ {n} images")
        if subset != "all" and not (isinstance(subset, int) and 1 <= subset <= len(tasks)):
            raise ConfigError(f"episodes: subset must be 'all' or an int in 1..{len(tasks)}, got {subset!r}")
        if meta_batch < 1:
            raise ConfigError(f"episodes: meta_batch must be ≥ 1, got {meta_batch}")
        self.data, self.tasks = data, list(tasks)
        self.support, self.query, self.subset, self.meta_batch = support, query, subset, meta_batch
        self.generator = torch.Generator().manual_seed(seed)

    def _task_subset(self) -> list[Task]:
        t = len(self.tasks)
        if self.subset == "all":
            code = int(torch.randint(1, 2**t, (1,), generator=self.generator))
            return [task for i, task in enumerate(self.tasks) if code >> i & 1]
        chosen = sorted(torch.randperm(t, generator=self.generator)[: self.subset].tolist())
        return [self.tasks[i] for i in chosen]

    def episode(self) -> dict:
        """One episode: ``{"train": support batch, "test": query batch, "tasks": names}``."""
        tasks = self._task_subset()
        perm = torch.randperm(len(self.data["image"]), generator=self.generator)
        device = self.data["image"].device
        support, query = perm[: self.support].to(device), perm[self.support : self.support + self.query].to(device)
        return {
            "train": task_batch(self.data, support, tasks),
            "test": task_batch(self.data, query, tasks),
            "tasks": [t.name for t in tasks],
            "indices": {"train": support, "test": query},
        }

    def sample(self) -> list[dict]:
        """A meta-batch of ``meta_batch`` episodes."""
        return [self.episode() for _ in range(self.meta_batch)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping) -> None:
        self.generator.set_state(state["generator"])


class MetaTestSampler:
    """Adaptation data for unseen tasks: ``shots`` training images and a fixed test set per task.

    Args:
        train_data: images the unseen tasks are adapted on (not the meta-train images when the dataset allows).
        test_data: images the adapted models are evaluated on.
        tasks: the unseen tasks.
    """

    def __init__(self, train_data: Mapping[str, Tensor], test_data: Mapping[str, Tensor], tasks: Sequence[Task]):
        if not tasks:
            raise ConfigError("meta-test: no unseen tasks")
        self.train_data, self.test_data = train_data, test_data
        self.tasks = {t.name: t for t in tasks}

    def task(self, name: str, shots: int, seed: int = 0) -> dict:
        """``{"train": shots images of the task, "test": all test images, "tasks": [name], "indices": ...}``; the same
        seed gives the same shots."""
        if name not in self.tasks:
            raise ConfigError(f"meta-test: unknown task {name!r}; unseen tasks: {', '.join(self.tasks)}")
        n = len(self.train_data["image"])
        if not 1 <= shots <= n:
            raise ConfigError(f"shots: {shots} asked for but task {name!r} has {n} training images")
        g = torch.Generator().manual_seed(seed)
        device = self.train_data["image"].device
        idx = torch.randperm(n, generator=g)[:shots].to(device)
        all_test = torch.arange(len(self.test_data["image"]), device=self.test_data["image"].device)
        task = [self.tasks[name]]
        return {
            "train": task_batch(self.train_data, idx, task),
            "test": task_batch(self.test_data, all_test, task),
            "tasks": [name],
            "indices": {"train": idx, "test": all_test},
        }

"""Adapt sparse backbones to unseen tasks: ``python -m l2sparse.adapt --task unseen``.

Four initialisations of the shared backbone are compared on the same unseen tasks, images, steps and seeds:

* ``meta_sparse``: meta-sparsity with λ learned (``l2sparse.meta``);
* ``meta_dense``: the same meta-training with λ fixed at 0;
* ``fixed_lambda``: the fixed-λ group-sparsity trainer ("Less is More") on the seen tasks, λ chosen from a small
  grid by the seen tasks' mean validation loss (the test split is never looked at);
* ``random``: a fresh random initialisation.

``--inits`` compares a subset instead (``meta_sparse,random`` skips training the two other baselines).

For every unseen task and seed a fresh head is attached to a copy of the backbone, and the whole model is
fine-tuned for ``--steps`` Adam steps on ``--shots`` training images of the task (drawn from ``--adapt-size``
images of the dataset's adaptation split, disjoint from the meta-train and test images). Every group that is zero
in the init stays zero (masked updates: the zero groups are re-zeroed after each step). The adapted model is
evaluated on the task's test images.
Meta-trained and fixed-λ inits are cached under ``--cache-dir`` (default ``$L2SPARSE_CACHE`` or
``~/.cache/l2sparse``) keyed by their configuration, so a second run reuses them.

Under ``torchrun --nproc_per_node N -m l2sparse.adapt ...`` the meta inits are meta-trained over all N processes,
the fixed-λ grid runs on rank 0, and the fine-tuning is dealt round-robin over the ranks (by task: a task's
inits × seeds run together through ``vmap``; by init × task × seed job with ``--no-vectorise``); rank 0
gathers them into the same report a single process writes, and alone writes it and the cache.
"""

from l2sparse.adapt.cli import main
from l2sparse.adapt.config import AdaptConfig
from l2sparse.adapt.experiment import run
from l2sparse.adapt.finetune import adapt_job, adapt_task, meta_test_sampler, zero_group_masks
from l2sparse.adapt.inits import (
    INIT_BASELINES,
    InitBaseline,
    checkpoint_init,
    fixed_lambda_init,
    meta_config,
    meta_init,
    random_init,
    register_init,
)
from l2sparse.adapt.report import headline, markdown_table, summarize_inits
from l2sparse.runs import cache_key

INITS = tuple(INIT_BASELINES)

__all__ = [
    "INITS",
    "INIT_BASELINES",
    "AdaptConfig",
    "InitBaseline",
    "adapt_job",
    "adapt_task",
    "cache_key",
    "checkpoint_init",
    "fixed_lambda_init",
    "headline",
    "main",
    "markdown_table",
    "meta_config",
    "meta_init",
    "meta_test_sampler",
    "random_init",
    "register_init",
    "run",
    "summarize_inits",
    "zero_group_masks",
]

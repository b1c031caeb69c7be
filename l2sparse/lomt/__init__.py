"""Layer-optimised multi-task models (LOMT): each task's head attaches at the layer its own sparse run needs.

``python -m l2sparse.lomt --dataset synthetic --split synthetic-default --out runs/lomt``

1. **Sparse runs**: for every task, ``--trials`` single-task runs of the fixed-λ trainer (group sparsity).
2. **Activity**: per task and backbone layer, the fraction of input-channel groups of the layer's convs that are
   non-zero; a layer is *active* for a task when that fraction exceeds ``--threshold`` (1%) in every trial.
3. **Attachment**: ``deepest-active`` (default): the deepest layer that is still active, i.e. the layer after which
   the task's own sparse run leaves the backbone inactive (the last layer when all are active). ``probe``: train a
   head on the frozen dense backbone at each layer and take the earliest layer whose validation loss is within
   ``--epsilon`` (relative) of the best.
4. **LOMT model**: one backbone, each head fed by its chosen layer; a forward pass for a set of tasks computes the
   backbone only up to the deepest attachment among them (``MultiTaskModel`` truncates).
5. **Comparison** with the plain multi-task model (every head at the last layer): same data, steps and seed;
   metrics, parameters, MACs and latency per task set, measured side by side.
"""

from __future__ import annotations

from l2sparse.lomt.activity import active_layers, activity_from_states, deepest_active, earliest_within, layer_activity
from l2sparse.lomt.cli import main
from l2sparse.lomt.config import LomtConfig
from l2sparse.lomt.experiment import run
from l2sparse.lomt.rules import RULES, RuleInput, probe_losses

__all__ = [
    "RULES",
    "LomtConfig",
    "RuleInput",
    "active_layers",
    "activity_from_states",
    "deepest_active",
    "earliest_within",
    "layer_activity",
    "main",
    "probe_losses",
    "run",
]

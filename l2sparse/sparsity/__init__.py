"""Channel-wise group sparsity: groups, penalty, proximal step, report and compaction (pure functions first)."""

from l2sparse.sparsity.compact import compact, max_output_difference
from l2sparse.sparsity.groups import ConvGroups, channel_groups, group_norms
from l2sparse.sparsity.penalty import layer_penalties, penalty
from l2sparse.sparsity.prox import ProxAdam, ProxSGD, adam_prox_steps, prox, prox_
from l2sparse.sparsity.report import count_macs, count_params, sparsity_report

__all__ = [
    "ConvGroups",
    "ProxAdam",
    "ProxSGD",
    "adam_prox_steps",
    "channel_groups",
    "compact",
    "count_macs",
    "count_params",
    "group_norms",
    "layer_penalties",
    "max_output_difference",
    "penalty",
    "prox",
    "prox_",
    "sparsity_report",
]

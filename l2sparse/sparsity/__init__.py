"""Channel-wise group sparsity: groups, penalty, proximal step, report, compaction and export (pure functions first)."""

from l2sparse.sparsity.compact import SizeReport, compact, compaction_summary, max_output_difference
from l2sparse.sparsity.export import export_model, export_onnx, load_onnx
from l2sparse.sparsity.filter_norms import filter_norms, keep_filter_norms_
from l2sparse.sparsity.fuse import fuse_batchnorm
from l2sparse.sparsity.groups import ConvGroups, channel_groups, group_norms
from l2sparse.sparsity.metric_prox import adam_metric, adam_prox_, metric_prox
from l2sparse.sparsity.optim import ProxAdam, ProxSGD
from l2sparse.sparsity.penalty import layer_penalties, penalty
from l2sparse.sparsity.prox import prox, prox_
from l2sparse.sparsity.report import count_macs, count_params, sparsity_report

__all__ = [
    "ConvGroups",
    "ProxAdam",
    "ProxSGD",
    "SizeReport",
    "adam_metric",
    "adam_prox_",
    "channel_groups",
    "compact",
    "compaction_summary",
    "count_macs",
    "count_params",
    "export_model",
    "export_onnx",
    "filter_norms",
    "fuse_batchnorm",
    "group_norms",
    "keep_filter_norms_",
    "layer_penalties",
    "load_onnx",
    "max_output_difference",
    "metric_prox",
    "penalty",
    "prox",
    "prox_",
    "sparsity_report",
]

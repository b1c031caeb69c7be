"""Meta-sparsity: differentiable proximal inner loops (backends) and the trainer that learns λ."""

from l2sparse.meta.backends import BACKENDS, InnerLoop, get_backend, importable
from l2sparse.meta.inner import ORDERS, InnerConfig, batch_stats_only

__all__ = ["BACKENDS", "ORDERS", "InnerConfig", "InnerLoop", "batch_stats_only", "get_backend", "importable"]

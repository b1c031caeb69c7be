"""Backbones, heads and the multi-task model; ``create_model(name, tasks)`` builds one by name."""

from l2sparse.models.backbones import ResNetBackbone
from l2sparse.models.multitask import MultiTaskModel, backbone_state
from l2sparse.models.registry import MODELS, check_model, create_model, register_model

__all__ = [
    "MODELS",
    "MultiTaskModel",
    "ResNetBackbone",
    "backbone_state",
    "check_model",
    "create_model",
    "register_model",
]

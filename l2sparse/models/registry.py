"""Models by name: ``create_model("tiny", tasks)``; extend with [`register_model`][]."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from l2sparse.errors import ConfigError
from l2sparse.models.backbones import ResNetBackbone, resnet50_backbone, small_backbone, tiny_backbone
from l2sparse.models.heads import HEADS
from l2sparse.models.multitask import MultiTaskModel


class HeadSpec(Protocol):
    """What a model needs to know of a task: its name, head kind (``dense``/``pooled``) and output channels."""

    name: str
    head: str
    out_channels: int


@dataclass(frozen=True)
class ModelConfig:
    backbone: Callable[[], ResNetBackbone]
    dense_head: dict = field(default_factory=dict)


MODELS: dict[str, ModelConfig] = {}


def register_model(name: str, backbone: Callable[[], ResNetBackbone], **dense_head: object) -> None:
    """Register a backbone factory under ``name``; ``dense_head`` kwargs configure its dense heads."""
    MODELS[name] = ModelConfig(backbone, dict(dense_head))


register_model("tiny", tiny_backbone, hidden=8, dilations=(1, 2))
register_model("small", small_backbone, hidden=32, dilations=(1, 2))
register_model("resnet50", resnet50_backbone, hidden=256, dilations=(1, 12, 24, 36))


def check_model(name: str) -> ModelConfig:
    """The registered model ``name``; an unknown name is a ``ConfigError`` listing the valid ones."""
    if name not in MODELS:
        raise ConfigError(f"model: unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def create_model(name: str, tasks: Sequence[HeadSpec], attach: Mapping[str, str] | None = None) -> MultiTaskModel:
    """Build a registered model with one head per task.

    Args:
        name: a registered model name (see ``MODELS``).
        tasks: objects with ``name``, ``head`` (``"dense"`` or ``"pooled"``) and ``out_channels``.
        attach: task name -> backbone layer; tasks not named attach at the last layer.
    """
    cfg = check_model(name)
    if not tasks:
        raise ValueError("create_model: at least one task is needed")
    backbone = cfg.backbone()
    attach = dict(attach or {})
    unknown = sorted(set(attach) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"attach: unknown task(s) {unknown}")
    heads, where = {}, {}
    for t in tasks:
        if t.head not in HEADS:
            raise ConfigError(f"task {t.name!r}: unknown head {t.head!r}; valid heads: {', '.join(HEADS)}")
        layer = attach.get(t.name, backbone.layer_names[-1])
        backbone.check_layer(layer)
        kwargs = cfg.dense_head if t.head == "dense" else {}
        heads[t.name] = HEADS[t.head](backbone.out_channels[layer], t.out_channels, **kwargs)
        where[t.name] = layer
    return MultiTaskModel(backbone, heads, where)

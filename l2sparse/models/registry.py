"""Models by name: ``create_model("tiny", tasks)``; extend with [`register_model`][]."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from l2sparse.errors import ConfigError
from l2sparse.models.backbones import resnet50_backbone, small_backbone, tiny_backbone
from l2sparse.models.heads import HEADS
from l2sparse.models.multitask import MultiTaskModel


class HeadSpec(Protocol):
    """What a model needs to know of a task: its name, head kind (``dense``/``pooled``) and output channels."""

    name: str
    head: str
    out_channels: int


@runtime_checkable
class Backbone(Protocol):
    """What a backbone must provide to be registered (``ResNetBackbone`` is the reference implementation).

    Attributes:
        layer_names: its layers in forward order; heads attach after one of them.
        out_channels: ``{layer: channels of its output}``; ``sync_out_channels()`` refreshes it after compaction.
        reduction: ``{layer: spatial stride of its output}``.
    """

    layer_names: list[str]
    out_channels: dict[str, int]
    reduction: dict[str, int]

    def forward(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """``{layer: features (B, C_layer, H / r, W / r)}`` for ``layers``, from images ``(B, 3, H, W)``, stopping
        after the deepest one."""
        ...

    def check_layer(self, name: str) -> None:
        """Raise ``ValueError`` listing the valid layer names unless ``name`` is one."""
        ...

    def channel_spaces(self) -> tuple[list, dict[str, int]]:
        """Its wiring: the channel spaces (``l2sparse.sparsity.spaces``) and each layer's output space."""
        ...

    def sync_out_channels(self) -> None: ...


@dataclass(frozen=True)
class ModelConfig:
    backbone: Callable[[], Backbone]
    dense_head: dict = field(default_factory=dict)


MODELS: dict[str, ModelConfig] = {}


def missing_members(backbone: object) -> list[str]:
    """The [`Backbone`][] members (attributes, then methods, as the protocol declares them) ``backbone`` lacks."""
    members = [*Backbone.__annotations__, *(n for n in vars(Backbone) if not n.startswith("_"))]
    return [m for m in members if not hasattr(backbone, m)]


def register_model(name: str, backbone: Callable[[], Backbone], **dense_head: object) -> None:
    """Register a backbone factory under ``name``; ``dense_head`` kwargs configure its dense heads.

    The factory is called once here: what it builds must be an ``nn.Module`` that meets the [`Backbone`][] protocol,
    otherwise a ``TypeError`` names what is missing."""
    built = backbone()
    missing = missing_members(built)
    if missing or not isinstance(built, nn.Module):
        what = ", ".join(missing) if missing else "it is not an nn.Module"
        raise TypeError(f"register_model({name!r}): the backbone does not meet the Backbone protocol ({what})")
    MODELS[name] = ModelConfig(backbone, dict(dense_head))


# The reference backbones go in without being built: building all three at every import of the package took about
# 0.25 s per process. tests/test_models.py checks each of them against the protocol instead.
MODELS.update(
    tiny=ModelConfig(tiny_backbone, {"hidden": 8, "dilations": (1, 2)}),
    small=ModelConfig(small_backbone, {"hidden": 32, "dilations": (1, 2)}),
    resnet50=ModelConfig(resnet50_backbone, {"hidden": 256, "dilations": (1, 12, 24, 36)}),
)


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

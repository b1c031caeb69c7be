"""A shared backbone with one head per task, each head attached at a named backbone layer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from l2sparse.models.backbones import ResNetBackbone
from l2sparse.sparsity.spaces import ChannelSpace


def backbone_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The backbone's entries of a multi-task model's ``state_dict``, keyed as ``model.backbone`` expects."""
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


class MultiTaskModel(nn.Module):
    """``forward(x, tasks)`` runs the backbone only as deep as the deepest attachment among ``tasks``.

    Args:
        backbone: the shared backbone (the part that is group-sparsified and compacted).
        heads: task name -> head module taking ``(features, (H, W))``.
        attach: task name -> backbone layer whose output feeds the head.
    """

    def __init__(self, backbone: ResNetBackbone, heads: Mapping[str, nn.Module], attach: Mapping[str, str]) -> None:
        super().__init__()
        if set(heads) != set(attach):
            raise ValueError("heads and attach must name the same tasks")
        for layer in attach.values():
            backbone.check_layer(layer)
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.attach = dict(attach)

    def forward(self, x: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Predictions for ``tasks`` (default: all), given images ``(B, 3, H, W)``.

        Returns:
            ``{task: (B, C_task, H, W)}`` for dense heads, ``{task: (B, C_task)}`` for pooled heads.
        """
        names = list(self.heads) if tasks is None else list(tasks)
        unknown = [t for t in names if t not in self.heads]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model has: {', '.join(self.heads)}")
        feats = self.backbone(x, {self.attach[t] for t in names})
        size = (x.shape[-2], x.shape[-1])
        return {t: self.heads[t](feats[self.attach[t]], size) for t in names}

    def sync_out_channels(self) -> None:
        self.backbone.sync_out_channels()

    def channel_spaces(self) -> list[ChannelSpace]:
        """The backbone's channel spaces, with every space that feeds a head pinned."""
        spaces, layer_space = self.backbone.channel_spaces()
        for layer in self.attach.values():
            spaces[layer_space[layer]].pinned = True
        return spaces

    def head_inputs(self) -> dict[int, list[nn.Module]]:
        """Index in ``channel_spaces()`` of each space heads read -> the heads' layers that read it.

        Each layer (a conv or a linear) reads channel ``j`` of the space as its input channel ``j``; a head names
        them with ``input_layers()``. A space that some head without ``input_layers()`` reads is left out, so it
        stays whole. [`compact`][l2sparse.sparsity.compact.compact] slices these layers when it removes channels.
        """
        _, layer_space = self.backbone.channel_spaces()
        readers: dict[int, list[nn.Module]] = {}
        opaque: set[int] = set()
        for task, layer in self.attach.items():
            head, space = self.heads[task], layer_space[layer]
            if hasattr(head, "input_layers"):
                readers.setdefault(space, []).extend(head.input_layers())
            else:
                opaque.add(space)
        return {space: layers for space, layers in readers.items() if space not in opaque}

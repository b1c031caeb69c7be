"""Dilated ResNet-style backbones that expose feature maps by layer name.

Layers are named ``stem``, ``layer1``, ``layer2``, ...; ``forward(x, layers)`` computes only up to the deepest
requested layer, which is what lets a head attach at an intermediate layer without running the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from l2sparse.models.layers import BasicBlock, Bottleneck, ConvBNAct
from l2sparse.sparsity.spaces import ChannelSpace, SpaceBuilder


class ResNetBackbone(nn.Module):
    """A ResNet-D style backbone with a configurable stem, block type, widths, strides and dilations.

    Args:
        block: ``"basic"`` or ``"bottleneck"`` (expansion 4).
        depths: blocks per stage.
        widths: output channels per stage (for bottlenecks: the inner width; output is 4x).
        strides: stride of each stage's first block.
        dilations: dilation of each stage (its first block uses half, as in dilated ResNets).
        stem: output channels of the stem's 3x3 convs; the first has stride 2.
        maxpool: a 3x3 stride-2 max pool after the stem.
    """

    def __init__(
        self,
        block: str,
        depths: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[int],
        stem: Sequence[int],
        maxpool: bool,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block: expected 'basic' or 'bottleneck', got {block!r}")
        if not (len(depths) == len(widths) == len(strides) == len(dilations)):
            raise ValueError("depths, widths, strides and dilations must have one entry per stage")
        units: list[nn.Module] = []
        c = 3
        for i, w in enumerate(stem):
            units.append(ConvBNAct(c, w, 3, stride=2 if i == 0 else 1))
            c = w
        if maxpool:
            units.append(nn.MaxPool2d(3, 2, padding=1))
        self.stem = nn.Sequential(*units)
        self.out_channels = {"stem": c}
        self.reduction = {"stem": 4 if maxpool else 2}
        self.layer_names = ["stem"]
        reduction = self.reduction["stem"]
        for i, (n, w, s, d) in enumerate(zip(depths, widths, strides, dilations, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n):
                dil = max(1, d // 2) if j == 0 else d
                stride = s if j == 0 else 1
                if block == "basic":
                    blocks.append(BasicBlock(c, w, stride, dil))
                    c = w
                else:
                    blocks.append(Bottleneck(c, w, 4 * w, stride, dil))
                    c = 4 * w
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            reduction *= s
            self.layer_names.append(name)
            self.out_channels[name] = c
            self.reduction[name] = reduction

    def check_layer(self, name: str) -> None:
        """Raise a ``ValueError`` listing the valid layer names if ``name`` is not one."""
        if name not in self.layer_names:
            raise ValueError(f"unknown layer {name!r}; valid layers: {', '.join(self.layer_names)}")

    def forward(self, x: Tensor, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Feature maps of the requested layers (default: the last), computing nothing past the deepest one.

        Args:
            x: images ``(B, 3, H, W)``.
            layers: layer names to return.

        Returns:
            ``{name: (B, out_channels[name], H / reduction[name], W / reduction[name])}``.
        """
        wanted = set(layers) if layers is not None else {self.layer_names[-1]}
        for name in wanted:
            self.check_layer(name)
        last = max(self.layer_names.index(n) for n in wanted)
        out = {}
        for name in self.layer_names[: last + 1]:
            x = getattr(self, name)(x)
            if name in wanted:
                out[name] = x
        return out

    def channel_spaces(self) -> tuple[list[ChannelSpace], dict[str, int]]:
        """Channel spaces of the backbone and the index of each layer's output space.

        The input image space and the last layer's output are pinned: the network input cannot lose channels, and
        the backbone's final features keep the width ``out_channels`` promises to heads attached later.
        """
        b = SpaceBuilder()
        cur = b.new(pinned=True)
        for unit in self.stem:
            if isinstance(unit, ConvBNAct):
                cur = b.conv_bn(cur, unit)
        layer_space = {"stem": cur}
        for name in self.layer_names[1:]:
            for blk in getattr(self, name):
                cur = blk.add_spaces(b, cur)
            layer_space[name] = cur
        b.spaces[cur].pinned = True
        return b.spaces, layer_space

    def sync_out_channels(self) -> None:
        """Re-read ``out_channels`` from the layers (after compaction removed channels of intermediate outputs)."""
        spaces, layer_space = self.channel_spaces()
        for name, idx in layer_space.items():
            producers = spaces[idx].producers
            self.out_channels[name] = producers[0][0].out_channels


def tiny_backbone() -> ResNetBackbone:
    """About 77k parameters: basic blocks 16-32-64, output stride 4, last stage dilated."""
    return ResNetBackbone("basic", (1, 1, 1), (16, 32, 64), (1, 2, 1), (1, 1, 2), stem=(16,), maxpool=False)


def small_backbone() -> ResNetBackbone:
    """About 0.7M parameters: two basic blocks per stage, 32-64-128, output stride 4, last stage dilated."""
    return ResNetBackbone("basic", (2, 2, 2), (32, 64, 128), (1, 2, 1), (1, 1, 2), stem=(32,), maxpool=False)


def resnet50_backbone() -> ResNetBackbone:
    """Dilated ResNet-D-50 (deep stem, avg-pool shortcuts), output stride 8, random init; about 23.5M parameters."""
    return ResNetBackbone(
        "bottleneck",
        (3, 4, 6, 3),
        (64, 128, 256, 512),
        (1, 2, 1, 1),
        (1, 1, 2, 4),
        stem=(32, 32, 64),
        maxpool=True,
    )

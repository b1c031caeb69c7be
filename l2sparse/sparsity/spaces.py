"""Channel spaces: which convs write and read each feature-map channel.

Hand-written instead of a traced dependency graph (e.g. Torch-Pruning) because our backbones are built from a few
block types that describe their own wiring exactly, including residual streams whose channels are tied across
blocks; a description cannot be fooled by tracing quirks (dict outputs, interpolation, truncated forwards) and
costs nothing to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class ChannelSpace:
    """One channel index space: channel ``j`` is the same feature for every producer and reader.

    Attributes:
        producers: ``(conv, bn or None)`` pairs whose output channel ``j`` is written (summed, for a residual
            stream) into this space.
        readers: convs that read channel ``j`` as their input channel ``j``.
        pinned: read by something that cannot lose channels (the network input, or a head that ``compact`` cannot
            slice: see ``MultiTaskModel.head_inputs``).
    """

    producers: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = field(default_factory=list)
    readers: list[nn.Conv2d] = field(default_factory=list)
    pinned: bool = False


class SpaceBuilder:
    """Collects channel spaces while a backbone walks its blocks in forward order."""

    def __init__(self) -> None:
        self.spaces: list[ChannelSpace] = []

    def new(self, pinned: bool = False) -> int:
        self.spaces.append(ChannelSpace(pinned=pinned))
        return len(self.spaces) - 1

    def read(self, space: int, conv: nn.Conv2d) -> None:
        self.spaces[space].readers.append(conv)

    def produce(self, space: int, conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> None:
        self.spaces[space].producers.append((conv, bn))

    def conv_bn(self, inp: int, unit: nn.Module) -> int:
        """Register a [`ConvBNAct`][l2sparse.models.layers.ConvBNAct] reading ``inp``; returns its output space."""
        self.read(inp, unit.conv)
        out = self.new()
        self.produce(out, unit.conv, unit.bn)
        return out

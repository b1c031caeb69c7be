"""Task heads: a light ASPP-style dense head and a pooled image-level head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from l2sparse.models.layers import ConvBNAct


class DenseHead(nn.Module):
    """Light ASPP-style head: a 1x1 reduction to ``hidden`` channels, parallel branches on it (1x1 for dilation 1,
    dilated 3x3 otherwise), concat, 1x1 fuse, 1x1 classifier, bilinear upsampling to the input size.
    ``(B, C, h, w) -> (B, out_channels, H, W)``.

    Reducing before the dilated branches (unlike DeepLab's ASPP, which runs them on the full backbone width) keeps
    the heads, which sparsity does not shrink, cheap next to the backbone.
    """

    def __init__(self, c_in: int, out_channels: int, hidden: int = 16, dilations: Sequence[int] = (1, 2)) -> None:
        super().__init__()
        self.reduce = ConvBNAct(c_in, hidden, 1)
        self.branches = nn.ModuleList(ConvBNAct(hidden, hidden, 1 if d == 1 else 3, dilation=d) for d in dilations)
        self.fuse = ConvBNAct(hidden * len(dilations), hidden, 1)
        self.classifier = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.reduce(x)
        y = self.fuse(torch.cat([b(x) for b in self.branches], dim=1))
        return F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)

    def input_layers(self) -> list[nn.Module]:
        """The layers that read the input feature map, input channel ``j`` as its channel ``j``."""
        return [self.reduce.conv]


class PooledHead(nn.Module):
    """Global average pool then a linear layer: ``(B, C, h, w) -> (B, out_channels)`` logits."""

    def __init__(self, c_in: int, out_channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, out_channels)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))

    def input_layers(self) -> list[nn.Module]:
        """The layers that read the input feature map, input channel ``j`` as its channel ``j``."""
        return [self.fc]


HEADS = {"dense": DenseHead, "pooled": PooledHead}

"""Small building blocks shared by backbones and heads."""

from __future__ import annotations

from torch import Tensor, nn

from l2sparse.sparsity.spaces import SpaceBuilder


class ConvBNAct(nn.Module):
    """``act(bn(conv(x)))`` with a bias-free conv; ``(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)``."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Shortcut(nn.Module):
    """ResNet-D projection shortcut: average pool when strided, then a 1x1 conv + BN (no activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.pool = (
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        )
        self.proj = ConvBNAct(c_in, c_out, k=1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.pool(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; ``(B, c_in, H, W) -> (B, c_out, H/stride, W/stride)``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c_in, c_out, 3, stride, dilation)
        self.conv2 = ConvBNAct(c_out, c_out, 3, 1, dilation, act=False)
        self.shortcut = Shortcut(c_in, c_out, stride) if stride > 1 or c_in != c_out else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + skip)

    def add_spaces(self, b: SpaceBuilder, inp: int) -> int:
        mid = b.conv_bn(inp, self.conv1)
        return _merge_residual(b, inp, mid, [self.conv2], self.shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand, residual; ``(B, c_in, H, W) -> (B, c_out, H/s, W/s)``."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c_in, c_mid, 1)
        self.conv2 = ConvBNAct(c_mid, c_mid, 3, stride, dilation)
        self.conv3 = ConvBNAct(c_mid, c_out, 1, act=False)
        self.shortcut = Shortcut(c_in, c_out, stride) if stride > 1 or c_in != c_out else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + skip)

    def add_spaces(self, b: SpaceBuilder, inp: int) -> int:
        mid = b.conv_bn(inp, self.conv1)
        mid = b.conv_bn(mid, self.conv2)
        return _merge_residual(b, inp, mid, [self.conv3], self.shortcut)


def _merge_residual(b: SpaceBuilder, inp: int, mid: int, last: list[ConvBNAct], shortcut: Shortcut | None) -> int:
    """Output space of a residual block: a new space after a projection, else the input stream itself (tied)."""
    if shortcut is None:
        out = inp
    else:
        b.read(inp, shortcut.proj.conv)
        out = b.new()
        b.produce(out, shortcut.proj.conv, shortcut.proj.bn)
    for unit in last:
        b.read(mid, unit.conv)
        b.produce(out, unit.conv, unit.bn)
    return out

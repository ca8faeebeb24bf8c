"""Convolutional building blocks shared by HRNet, HRFormer and the task heads.

Attribute names (``conv1``, ``bn1``, ..., ``downsample``) follow the official HRNet code so that the
official checkpoints map onto these modules without renaming their insides.
"""

from __future__ import annotations

import torch
from torch import nn

BN_MOMENTUM = 0.1


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class DropPath(nn.Module):
    """Stochastic depth per sample: zero the residual branch of a whole sample with probability ``p``.

    Kept samples are rescaled by ``1 / (1 - p)``. Identity in eval mode or when ``p == 0``.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (HRNet branches).

    Shapes: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = bn(channels)
        self.conv2 = conv3x3(channels, out_channels)
        self.bn2 = bn(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 expansion) conv-BN bottleneck with a residual connection.

    ``depthwise=True`` makes the 3x3 conv depth-wise (HRFormer's classification head, ``BottleneckDWP``).
    Shapes: (B, C_in, H, W) -> (B, 4 * channels, H / stride, W / stride).
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, depthwise: bool = False):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = bn(channels)
        self.conv2 = conv3x3(channels, channels, stride, groups=channels if depthwise else 1)
        self.bn2 = bn(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.bn3 = bn(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """1x1 conv + BN shortcut when the residual changes shape, else ``None``."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), bn(out_channels))


def make_layer(block: type[BasicBlock] | type[Bottleneck], in_channels: int, channels: int, num_blocks: int,
               **kwargs) -> nn.Sequential:
    """A stack of ``num_blocks`` residual blocks; the first one adapts the channel count."""
    layers = []
    for _ in range(num_blocks):
        layers.append(block(in_channels, channels, **kwargs))
        in_channels = channels * block.expansion
    return nn.Sequential(*layers)


class ConvBNAct(nn.Module):
    """Convolution, optional BatchNorm, optional activation (mmcv ``ConvModule``'s layout and names).

    Attribute names ``conv`` / ``bn`` are those of ``ConvModule`` so that Lite-HRNet, UniFormer-seg and mmpose/mmseg
    checkpoints map onto these modules key for key.  As in ``ConvModule`` with ``bias='auto'``, the convolution has a
    bias exactly when there is no BatchNorm.  ``act`` is an ``nn.Module`` (e.g. ``nn.ReLU()``) or ``None``.

    Shapes: (B, C_in, H, W) -> (B, C_out, H_out, W_out) as ``nn.Conv2d(in, out, kernel_size, stride, padding, groups)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, groups: int = 1, norm: bool = True, act: nn.Module | None = None):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                              bias=not norm)
        self.bn = bn(out_channels) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.act is None else self.act(x)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (B, g*n, H, W) viewed as (B, g, n, H, W), transposed to (B, n, g, H, W), flattened.

    Output channel ``k * g + i`` is input channel ``i * n + k``.
    """
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be shuffled in {groups} groups")
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)

"""ImageNet classification heads: HRNet/HRFormer's multi-resolution head and UniFormer's.

HRNet / HRFormer:

    features [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)]
      -> incre_modules[b]: one bottleneck per branch to 128 / 256 / 512 / 1024 channels
      -> y = incre[0](x0); y = incre[b+1](x_{b+1}) + downsamp_modules[b](y)   (stride-2 chain)
      -> final_layer: conv1x1 1024 -> 2048 + BN + ReLU -> global average pool -> classifier (B, num_classes)

HRNet uses plain bottlenecks and conv3x3 stride-2 downsampling; HRFormer uses bottlenecks with a
depth-wise 3x3 (``BottleneckDWP``) and depth-wise + point-wise downsampling.  Attribute names follow the
official code so that converted checkpoints load strictly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import Bottleneck, bn, conv3x3, make_layer
from ..registry import backbone_family

HEAD_CHANNELS = (32, 64, 128, 256)


def _conv_downsample(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_channels, out_channels, stride=2, bias=True), bn(out_channels),
                         nn.ReLU(inplace=True))


def _dwsep_downsample(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv3x3(in_channels, in_channels, stride=2, groups=in_channels, bias=True), bn(in_channels),
        nn.Conv2d(in_channels, out_channels, 1, bias=True), bn(out_channels), nn.ReLU(inplace=True))


class HRClassificationHead(nn.Module):
    """Multi-resolution features -> class logits (B, num_classes).

    Args:
        in_channels: channels of the four branches.
        depthwise: HRFormer variant (depth-wise bottlenecks and downsampling) when True, HRNet otherwise.
        drop_rate: dropout before the classifier (0 in the official models).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int = 1000, depthwise: bool = False,
                 drop_rate: float = 0.0):
        super().__init__()
        if len(in_channels) != len(HEAD_CHANNELS):
            raise ValueError(f"classification head needs {len(HEAD_CHANNELS)} branches, got {len(in_channels)}; "
                             "build the backbone with multiscale_output=True")
        widths = [c * Bottleneck.expansion for c in HEAD_CHANNELS]
        self.incre_modules = nn.ModuleList(make_layer(Bottleneck, c, hc, 1, depthwise=depthwise)
                                           for c, hc in zip(in_channels, HEAD_CHANNELS, strict=True))
        down = _dwsep_downsample if depthwise else _conv_downsample
        self.downsamp_modules = nn.ModuleList(down(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        self.final_layer = nn.Sequential(nn.Conv2d(widths[-1], 2048, 1, bias=True), bn(2048), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        y = self.incre_modules[0](features[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](features[i + 1]) + down(y)
        y = self.final_layer(y).mean(dim=(2, 3))
        return self.classifier(self.dropout(y))


class UniFormerClsHead(nn.Module):
    """UniFormer's ImageNet head: BatchNorm on the stage-4 map, global average pool, linear classifier.

    features[-1] (B, C, H/32, W/32) -> logits (B, num_classes).  ``norm`` and ``head`` are the official names
    (the classification checkpoints' ``norm.*`` and ``head.*``); the backbone is built with
    ``output_norms=False, multiscale_output=False``.
    """

    def __init__(self, in_channels: int | Sequence[int] = 512, num_classes: int = 1000, drop_rate: float = 0.0):
        super().__init__()
        if not isinstance(in_channels, int):  # the backbone's out_channels: the last (lowest-resolution) map
            in_channels = in_channels[-1]
        self.norm = bn(in_channels)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(in_channels, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.norm(features[-1]).flatten(2).mean(-1)))


# backbone family -> its official ImageNet head, called with (in_channels, num_classes, drop_rate)
CLASSIFICATION_HEADS = {
    "hrnet": lambda in_channels, num_classes, drop_rate: HRClassificationHead(
        in_channels, num_classes, depthwise=False, drop_rate=drop_rate),
    "hrformer": lambda in_channels, num_classes, drop_rate: HRClassificationHead(
        in_channels, num_classes, depthwise=True, drop_rate=drop_rate),
    "uniformer": UniFormerClsHead,
}


def classification_head(backbone: str, in_channels: int | Sequence[int], num_classes: int = 1000,
                        drop_rate: float = 0.0) -> nn.Module:
    """The official ImageNet head of backbone ``backbone`` (a registered name): HRNet's plain multi-resolution head,
    HRFormer's depth-wise one, or UniFormer's norm + pool + linear (``CLASSIFICATION_HEADS``)."""
    family = backbone_family(backbone)
    if family not in CLASSIFICATION_HEADS:
        raise ValueError(f"backbone {backbone!r} ({family}) has no classification head; "
                         f"families with one: {', '.join(sorted(CLASSIFICATION_HEADS))}")
    return CLASSIFICATION_HEADS[family](in_channels, num_classes, drop_rate)

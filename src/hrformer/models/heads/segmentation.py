"""Segmentation heads on the multi-resolution representation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import bn


def concat_branches(features: list[torch.Tensor], align_corners: bool = True) -> torch.Tensor:
    """HRNetV2 representation: upsample every branch bilinearly to branch 0 and concatenate.

    [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)] -> (B, C1 + ... + C4, H/4, W/4).
    """
    size = features[0].shape[-2:]
    ups = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=align_corners)
                           for f in features[1:]]
    return torch.cat(ups, dim=1)


class UpsampleConcatHead(nn.Module):
    """HRNetV2 segmentation head: concat branches, conv1x1-BN-ReLU, conv1x1 to classes.

    Output logits at 1/4 resolution (B, num_classes, H/4, W/4); ``last_layer`` is named as in the
    official HRNet-Semantic-Segmentation code.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, align_corners: bool = True):
        super().__init__()
        c = sum(in_channels)
        self.align_corners = align_corners
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=True), bn(c), nn.ReLU(inplace=True), nn.Conv2d(c, num_classes, 1, bias=True))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.last_layer(concat_branches(features, self.align_corners))

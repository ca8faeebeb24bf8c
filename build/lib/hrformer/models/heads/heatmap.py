"""Top-down heatmap heads: a 1x1 conv on the highest-resolution branch (HRNet, HRFormer, Lite-HRNet pose), and
the SimpleBaseline deconvolution head on the lowest-resolution map (UniFormer pose)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class HeatmapHead(nn.Module):
    """features[0] (B, C1, H/4, W/4) -> heatmaps (B, num_joints, H/4, W/4).

    ``final_layer`` is named as in the official code (``final_layer`` in HRNet pose,
    ``keypoint_head.final_layer`` in mmpose), so converted checkpoints load directly.
    """

    def __init__(self, in_channels: int | Sequence[int], num_joints: int = 17, kernel_size: int = 1):
        super().__init__()
        if not isinstance(in_channels, int):  # the backbone's out_channels: use the highest-resolution branch
            in_channels = in_channels[0]
        self.final_layer = nn.Conv2d(in_channels, num_joints, kernel_size, padding=kernel_size // 2)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.final_layer(features[0])


class DeconvHeatmapHead(nn.Module):
    """SimpleBaseline head (mmpose ``TopDownSimpleHead`` defaults), as UniFormer's pose models use it.

    features[-1] (B, C, H/32, W/32) -> three x [ConvTranspose 4x4 stride 2 (no bias), BN, ReLU] to
    ``deconv_channels`` -> 1x1 conv (bias) -> heatmaps (B, num_joints, H/4, W/4).  ``deconv_layers`` and
    ``final_layer`` are the official names (``keypoint_head.deconv_layers.{0,1,3,4,6,7}``); initialised as mmpose
    (deconv and final conv normal std 0.001, BN 1 / 0).
    """

    def __init__(self, in_channels: int | Sequence[int], num_joints: int = 17, num_deconv_layers: int = 3,
                 deconv_channels: int = 256):
        super().__init__()
        if not isinstance(in_channels, int):  # the backbone's out_channels: use the last (lowest-resolution) map
            in_channels = in_channels[-1]
        layers: list[nn.Module] = []
        for _ in range(num_deconv_layers):
            layers += [nn.ConvTranspose2d(in_channels, deconv_channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(deconv_channels), nn.ReLU(inplace=True)]
            in_channels = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(in_channels, num_joints, 1)
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(features[-1]))

"""Top-down heatmap head of HRNet/HRFormer pose: a 1x1 conv on the highest-resolution branch."""

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

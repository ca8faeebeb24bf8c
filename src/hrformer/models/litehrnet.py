"""Lite-HRNet (Yu et al., CVPR 2021): the multi-resolution scaffold with shuffle-style lightweight blocks.

    image (B, 3, H, W)
      -> stem: conv3x3 s2 + a ShuffleNet-v2 style down-sampling unit          (B, 32, H/4, W/4)
      -> 3 stages (2, 3, 4 branches): depth-wise separable transitions, modules of
         2 conditional channel weighting blocks (LITE) or 2 shuffle units per branch (NAIVE), then fusion
         with depth-wise separable down-sampling
      -> iterative head: from the lowest resolution up, upsample (bilinear, align_corners=True), add,
         depth-wise separable conv                                             [(B, C1, H/4, W/4), ...]

Configurations, key names and the fusion behaviour follow the official code (HRNet/Lite-HRNet
``models/backbones/litehrnet.py``, configs ``configs/top_down/{lite_hrnet,naive_litehrnet}/coco``;
facts in ``../shared/docs/hrnet-family-facts.md`` section 1b).

Fusion: the official module fuses with an aliasing quirk that counts branch 0 twice (see
:class:`hrformer.models.scaffold.HRModule`, ``fuse_mode="lite_official"``).  The released weights were
trained with it, and fixing it was reported to cost 0.5-1 AP (HRNet/Lite-HRNet#53, #64), so it is the
default; ``clean_fusion=True`` gives the plain sum of HRNet.

The backbone returns, as the official one, the iterative head's highest-resolution map (``out_channels``
``(C1,)``, stride 4); ``multiscale_output=True`` returns all four head outputs (C1, C1, C2, C3 channels), and
``with_head=False`` the raw branch maps instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, channel_shuffle
from .convert import CheckpointRules, Layout
from .registry import register_backbone, register_family_rules
from .scaffold import HRBackbone, ScaffoldSpec, StageSpec

MODULE_TYPES = ("lite", "naive")


class LiteStem(nn.Module):
    """conv3x3 s2 + BN + ReLU, then a ShuffleNet-v2 down-sampling unit: (B, 3, H, W) -> (B, out, H/4, W/4).

    The 32 stem channels split in two halves: ``branch1`` (dw3x3 s2 + BN, 1x1 + BN + ReLU) on the first, and
    ``expand_conv`` (1x1 + BN + ReLU), ``depthwise_conv`` (dw3x3 s2 + BN), ``linear_conv`` (1x1 + BN + ReLU) on the
    second; concatenated and channel-shuffled in 2 groups.
    """

    def __init__(self, in_channels: int = 3, stem_channels: int = 32, out_channels: int = 32,
                 expand_ratio: float = 1.0):
        super().__init__()
        self.out_channels = out_channels
        mid = int(round(stem_channels * expand_ratio))
        half = stem_channels // 2
        same = stem_channels == out_channels
        self.conv1 = ConvBNAct(in_channels, stem_channels, 3, stride=2, act=nn.ReLU(inplace=True))
        self.branch1 = nn.Sequential(
            ConvBNAct(half, half, 3, stride=2, groups=half),
            ConvBNAct(half, out_channels - half if same else out_channels - stem_channels, 1,
                      act=nn.ReLU(inplace=True)))
        self.expand_conv = ConvBNAct(half, mid, 1, act=nn.ReLU(inplace=True))
        self.depthwise_conv = ConvBNAct(mid, mid, 3, stride=2, groups=mid)
        self.linear_conv = ConvBNAct(mid, half if same else stem_channels, 1, act=nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv1(x).chunk(2, dim=1)
        x2 = self.linear_conv(self.depthwise_conv(self.expand_conv(x2)))
        return channel_shuffle(torch.cat([self.branch1(x1), x2], dim=1), 2)


class CrossResolutionWeighting(nn.Module):
    """Channel weights computed from all branches together (the paper's cross-resolution weighting H).

    Every map is average-pooled to the lowest branch's size, the maps are concatenated (sum C channels),
    conv1x1 + BN + ReLU to ``int(sum C / ratio)``, conv1x1 + BN + sigmoid back to sum C; the weights are split
    per branch, upsampled (nearest) to each branch's size and multiplied in.  List of (B, C_b, H_b, W_b) in
    and out.
    """

    def __init__(self, channels: tuple[int, ...], ratio: int):
        super().__init__()
        self.channels = tuple(channels)
        total = sum(channels)
        self.conv1 = ConvBNAct(total, int(total / ratio), 1, act=nn.ReLU(inplace=True))
        self.conv2 = ConvBNAct(int(total / ratio), total, 1, act=nn.Sigmoid())

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        size = xs[-1].shape[-2:]
        pooled = [F.adaptive_avg_pool2d(x, size) for x in xs[:-1]] + [xs[-1]]
        weights = self.conv2(self.conv1(torch.cat(pooled, dim=1))).split(self.channels, dim=1)
        return [x * F.interpolate(w, size=x.shape[-2:], mode="nearest") for x, w in zip(xs, weights, strict=True)]


class SpatialWeighting(nn.Module):
    """Per-branch channel weights from the branch's own global context (the paper's spatial weighting H_s).

    Global average pool, conv1x1 (bias) + ReLU to C/4, conv1x1 (bias) + sigmoid to C, multiply:
    (B, C, H, W) -> (B, C, H, W).  (A squeeze-excitation; the name is the paper's.)
    """

    def __init__(self, channels: int, ratio: int = 4):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = ConvBNAct(channels, int(channels / ratio), 1, norm=False, act=nn.ReLU(inplace=True))
        self.conv2 = ConvBNAct(int(channels / ratio), channels, 1, norm=False, act=nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv2(self.conv1(self.global_avgpool(x)))


class ConditionalChannelWeighting(nn.Module):
    """Lite-HRNet's block: it replaces the 1x1 convs of a shuffle block with weights conditioned on all branches.

    For each branch the channels split in halves; the first half is kept, the second goes through
    :class:`CrossResolutionWeighting` (jointly over branches), a depth-wise conv3x3 + BN and
    :class:`SpatialWeighting`; the halves are concatenated and channel-shuffled (2 groups).
    List of (B, C_b, H_b, W_b) in and out.
    """

    def __init__(self, channels: tuple[int, ...], reduce_ratio: int):
        super().__init__()
        halves = tuple(c // 2 for c in channels)
        self.cross_resolution_weighting = CrossResolutionWeighting(halves, reduce_ratio)
        self.depthwise_convs = nn.ModuleList(ConvBNAct(c, c, 3, groups=c) for c in halves)
        self.spatial_weighting = nn.ModuleList(SpatialWeighting(c) for c in halves)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        kept, moving = zip(*(x.chunk(2, dim=1) for x in xs), strict=True)
        moving = self.cross_resolution_weighting(list(moving))
        moving = [sw(dw(x)) for x, dw, sw in zip(moving, self.depthwise_convs, self.spatial_weighting, strict=True)]
        return [channel_shuffle(torch.cat([a, b], dim=1), 2) for a, b in zip(kept, moving, strict=True)]


class ShuffleUnit(nn.Module):
    """ShuffleNet-v2 unit with stride 1 (naive Lite-HRNet branches): (B, C, H, W) -> (B, C, H, W).

    The second half of the channels goes through 1x1 + BN + ReLU, dw3x3 + BN, 1x1 + BN + ReLU (``branch2``); the
    halves are concatenated and channel-shuffled (2 groups).
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"a shuffle unit needs an even channel count, got {channels}")
        half = channels // 2
        self.branch2 = nn.Sequential(
            ConvBNAct(half, half, 1, act=nn.ReLU(inplace=True)),
            ConvBNAct(half, half, 3, groups=half),
            ConvBNAct(half, half, 1, act=nn.ReLU(inplace=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch2(x2)], dim=1), 2)


class DepthwiseSeparableConv(nn.Module):
    """dw3x3 + BN (no activation), then 1x1 + BN + ReLU (mmcv ``DepthwiseSeparableConvModule`` names)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise_conv = ConvBNAct(in_channels, in_channels, 3, groups=in_channels)
        self.pointwise_conv = ConvBNAct(in_channels, out_channels, 1, act=nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class IterativeHead(nn.Module):
    """Lite-HRNet's head: aggregate branches from the lowest resolution upwards.

    ``s_3 = P_3(x_3)``; ``s_b = P_b(x_b + up(s_{b+1}))`` with bilinear upsampling (align_corners=True) and
    ``P_b`` a :class:`DepthwiseSeparableConv` to the next higher branch's width (the highest keeps its own).
    [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)] -> [(B, C1, H/4, W/4), (B, C1, H/8, W/8), (B, C2, ...), (B, C3, ...)].
    ``projects`` are ordered from the lowest resolution up, as in the official code.
    """

    def __init__(self, in_channels: tuple[int, ...]):
        super().__init__()
        rev = tuple(reversed(in_channels))
        self.projects = nn.ModuleList(
            DepthwiseSeparableConv(c, rev[i + 1] if i + 1 < len(rev) else c) for i, c in enumerate(rev))
        self.out_channels = tuple(reversed([rev[i + 1] if i + 1 < len(rev) else c for i, c in enumerate(rev)]))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs, last = [], None
        for x, project in zip(reversed(xs), self.projects, strict=True):
            if last is not None:
                x = x + F.interpolate(last, size=x.shape[-2:], mode="bilinear", align_corners=True)
            last = project(x)
            outs.append(last)
        return outs[::-1]


@dataclass(frozen=True)
class LiteHRNetConfig:
    num_modules: tuple[int, int, int]  # stages with 2, 3, 4 branches
    channels: tuple[int, int, int, int]
    module_type: str = "lite"  # "lite": conditional channel weighting; "naive": shuffle units per branch
    num_blocks: int = 2  # per module (lite) or per branch (naive)
    reduce_ratio: int = 8  # cross-resolution weighting (lite only)
    stem: tuple[int, int, float] = (32, 32, 1.0)  # stem_channels, out_channels, expand_ratio


LITEHRNET_CONFIGS: dict[str, LiteHRNetConfig] = {
    "litehrnet_18": LiteHRNetConfig(num_modules=(2, 4, 2), channels=(40, 80, 160, 320)),
    "litehrnet_30": LiteHRNetConfig(num_modules=(3, 8, 3), channels=(40, 80, 160, 320)),
    "naive_litehrnet_18": LiteHRNetConfig(num_modules=(2, 4, 2), channels=(30, 60, 120, 240), module_type="naive"),
    "wider_naive_litehrnet_18": LiteHRNetConfig(num_modules=(2, 4, 2), channels=(40, 80, 160, 320),
                                                module_type="naive"),
}


class LiteHRNet(HRBackbone):
    """Lite-HRNet backbone.  forward: (B, 3, H, W) -> [(B, C1, H/4, W/4)] (``multiscale_output=True``: four maps).

    Args:
        config: depth, widths and block type of the variant.
        clean_fusion: fuse with the plain sum (HRNet's) instead of the official Lite-HRNet arithmetic, which
            counts branch 0 twice; the released weights need ``False`` (the default).
        multiscale_output: return all four maps instead of the highest-resolution one.
        with_head: apply the iterative head (official: True); False returns the raw branch maps.

    Weights are initialised as the official ``init_weights`` (conv normal std 0.001, zero bias; BN 1 / 0); the
    official pose models train from scratch.
    """

    def __init__(self, config: LiteHRNetConfig, clean_fusion: bool = False, multiscale_output: bool = False,
                 with_head: bool = True):
        if config.module_type not in MODULE_TYPES:
            raise ValueError(f"module_type must be one of {MODULE_TYPES}, got {config.module_type!r}")
        cfg = config
        spec = ScaffoldSpec(stage1_blocks=0, stage1_channels=0, stages=tuple(
            StageSpec(cfg.num_modules[s], (cfg.num_blocks,) * (s + 2), cfg.channels[: s + 2]) for s in range(3)))
        block_options: dict = {}
        if cfg.module_type == "lite":
            block_options["make_module_blocks"] = lambda channels, stage, module: [
                ConditionalChannelWeighting(channels, cfg.reduce_ratio) for _ in range(cfg.num_blocks)]
        else:
            block_options["make_block"] = lambda channels, stage, branch, drop_path: ShuffleUnit(channels)
        super().__init__(spec, fusion="dwsep", fuse_upsample="nearest", multiscale_output=True,
                         stem=LiteStem(3, *cfg.stem), transition="dwsep",
                         fuse_mode="sum" if clean_fusion else "lite_official", **block_options)
        self.config = cfg
        self.clean_fusion = clean_fusion
        self.head_layer = IterativeHead(cfg.channels) if with_head else None
        channels = self.head_layer.out_channels if with_head else cfg.channels
        n_out = len(channels) if multiscale_output else 1
        self.out_channels = tuple(channels[:n_out])
        self.strides = tuple(4 * 2**b for b in range(n_out))
        self.apply(_init_official)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ys = self.forward_branches(x)
        if self.head_layer is not None:
            ys = self.head_layer(ys)
        return ys[: len(self.out_channels)]


def _init_official(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, std=0.001)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


for _name, _cfg in LITEHRNET_CONFIGS.items():
    register_backbone(_name, partial(LiteHRNet, _cfg), family="litehrnet")


class LiteHRNetRules(CheckpointRules):
    """The official Lite-HRNet checkpoints (HRNet/Lite-HRNet, mmpose): ``transitionN`` -> ``transitions.N``,
    ``stageN`` -> ``stages.N`` (0-based in both), a module's ``layers`` -> ``blocks`` (conditional channel weighting)
    or ``branches`` (the naive model's per-branch shuffle units); the stem, the blocks' insides and ``head_layer``
    keep their names.  One layout: the official fusion, the iterative head's highest-resolution map, a 1x1 head."""

    backbone_roots = ("stem.", "transition", "stage", "head_layer.")
    backbone_rules = [
        (re.compile(r"^transition(\d)\."), r"transitions.\1."),
        (re.compile(r"^stage(\d)\."), r"stages.\1."),
        (re.compile(r"\.layers\.(\d+\.\d+\.branch2)\."), r".branches.\1."),  # naive: layers.<branch>.<unit>
        (re.compile(r"\.layers\."), ".blocks."),  # lite: layers.<block>
    ]

    def layout(self, backbone: dict, head: dict, hints: dict) -> Layout:
        if "final_layer.weight" in head:
            return Layout("Lite-HRNet (pose)", "pose", {}, "heatmap-1x1",
                          {"kernel_size": head["final_layer.weight"].shape[-1]})
        return Layout("Lite-HRNet (backbone)", None, {})


register_family_rules("litehrnet", LiteHRNetRules())

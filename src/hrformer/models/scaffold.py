"""The multi-resolution scaffold shared by every high-resolution backbone.

    image (B, 3, H, W)
      -> stem: two 3x3 stride-2 conv-BN-ReLU                      (B, 64, H/4, W/4)
      -> stage 1: bottleneck blocks                                 (B, 256, H/4, W/4)
      -> for each later stage: transition (open a branch at half the lowest resolution),
         then modules of parallel branches, each followed by fusion across resolutions
      -> [ (B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16), (B, C4, H/32, W/32) ]

Only the block inside a branch and the kind of fusion differ between HRNet and HRFormer: a
family passes a ``make_block`` factory and a ``fusion`` name.  Fusion of output branch ``i`` sums,
over input branches ``j``: the input itself (``j == i``), a chain of ``i - j`` stride-2 3x3 steps
(``j < i``; full convs for HRNet, depth-wise + point-wise for HRFormer), or a 1x1 conv + BN followed
by upsampling (``j > i``), then applies ReLU.

Lite-HRNet uses the same scaffold with its own stem and no stage 1 (``stem=``, ``stage1_blocks=0``),
depth-wise separable transitions (``transition="dwsep"``), blocks that act on all branches at once
(``make_module_blocks``: conditional channel weighting mixes resolutions inside the block) and the
official Lite-HRNet fusion arithmetic (``fuse_mode="lite_official"``, see :class:`HRModule`).

``output="v2"`` / ``"v2p"`` (HRNetV2 / HRNetV2p, Wang et al. TPAMI 2020) return the concatenation of all
branches upsampled to 1/4, and that representation average-pooled to 1/8, 1/16, 1/32 and 1/64.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Bottleneck, bn, conv3x3, make_layer
from .convert import CheckpointRules, fuse_rows_of_last_module

# make_block(channels, stage_index, branch_index, drop_path) -> a block mapping (B, C, H, W) to itself.
BlockFactory = Callable[[int, int, int, float], nn.Module]
# make_module_blocks(channels, stage_index, module_index) -> blocks mapping the list of branch maps to a new list.
ModuleBlocksFactory = Callable[[tuple[int, ...], int, int], Sequence[nn.Module]]


@dataclass(frozen=True)
class StageSpec:
    """One stage after stage 1: ``num_modules`` modules of ``len(channels)`` parallel branches."""

    num_modules: int
    num_blocks: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class ScaffoldSpec:
    """Everything that fixes the topology of a high-resolution backbone."""

    stage1_blocks: int
    stage1_channels: int  # bottleneck width; stage-1 output has 4x as many channels
    stages: tuple[StageSpec, ...]


# --------------------------------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------------------------------

def _resize_official(x: torch.Tensor, size: tuple[int, int], scale: int, mode: str) -> torch.Tensor:
    """Upsample by ``scale`` the way each official code base does, then fix the size if it is off.

    - ``nearest`` (HRNet pose/cls, HRFormer cls/seg): nearest x scale, then bilinear (align_corners=True)
      to the exact size when the input was not divisible (HRFormer's behaviour).
    - ``bilinear`` (HRFormer pose): bilinear x scale (align_corners=False), then bilinear to the exact size.
    - ``bilinear_resize`` (HRNet-Semantic-Segmentation HRNetV2 checkpoints: pytorch-v1.1 and master branches,
      and the HRNet-OCR branch's HRNetV2 configs): bilinear (align_corners=False) straight to the size.
    - ``bilinear_align_corners`` (HRNet-OCR checkpoints, the HRNet-OCR branch's default): bilinear
      (align_corners=True) straight to the size.
    """
    if mode in ("bilinear_align_corners", "bilinear_resize"):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=mode == "bilinear_align_corners")
    if mode == "nearest":
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
        fix_align = True
    else:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        fix_align = False
    if x.shape[-2:] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=fix_align)
    return x


FUSE_UPSAMPLE_MODES = ("nearest", "bilinear", "bilinear_resize", "bilinear_align_corners")


class UpsampleFuse(nn.Sequential):
    """Lower -> higher resolution: 1x1 conv + BN, then upsampling to the target size.

    (B, C_j, H_j, W_j) -> (B, C_i, H_i, W_i) with H_i = H_j * scale.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int, mode: str):
        if mode not in FUSE_UPSAMPLE_MODES:
            raise ValueError(f"fuse_upsample must be one of {FUSE_UPSAMPLE_MODES}, got {mode!r}")
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=False), bn(out_channels))
        self.scale = scale
        self.mode = mode

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _resize_official(super().forward(x), size, self.scale, self.mode)


class DownsampleFuse(nn.Sequential):
    """Higher -> lower resolution: a chain of stride-2 steps (each a ``nn.Sequential``).

    (B, C_j, H_j, W_j) -> (B, C_i, H_j / 2^(i-j), W_j / 2^(i-j)).
    """

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return super().forward(x)


class IdentityFuse(nn.Module):
    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return x


def conv_down_step(in_channels: int, out_channels: int, last: bool) -> nn.Sequential:
    """HRNet: conv3x3 stride 2 + BN (+ ReLU except on the last step)."""
    layers = [conv3x3(in_channels, out_channels, stride=2), bn(out_channels)]
    return nn.Sequential(*layers) if last else nn.Sequential(*layers, nn.ReLU(inplace=True))


def dwsep_down_step(in_channels: int, out_channels: int, last: bool) -> nn.Sequential:
    """HRFormer: depth-wise conv3x3 stride 2 + BN, point-wise conv1x1 + BN (+ ReLU except on the last step)."""
    layers = [
        conv3x3(in_channels, in_channels, stride=2, groups=in_channels),
        bn(in_channels),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        bn(out_channels),
    ]
    return nn.Sequential(*layers) if last else nn.Sequential(*layers, nn.ReLU(inplace=True))


DOWN_STEPS: dict[str, Callable[[int, int, bool], nn.Sequential]] = {
    "conv": conv_down_step,
    "dwsep": dwsep_down_step,
}


def make_fuse_layer(channels: Sequence[int], i: int, j: int, down_step: Callable, upsample: str) -> nn.Module:
    """The module that brings branch ``j`` to the resolution and width of branch ``i``."""
    if j == i:
        return IdentityFuse()
    if j > i:
        return UpsampleFuse(channels[j], channels[i], 2 ** (j - i), upsample)
    steps = [down_step(channels[j], channels[i] if k == i - j - 1 else channels[j], k == i - j - 1)
             for k in range(i - j)]
    return DownsampleFuse(*steps)


# --------------------------------------------------------------------------------------------------
# Modules, transitions, backbone
# --------------------------------------------------------------------------------------------------

FUSE_MODES = ("sum", "lite_official")


class HRModule(nn.Module):
    """Parallel branches followed by multi-resolution fusion.

    Input and output: a list of ``len(channels)`` maps (B, C_b, H/2^b, W/2^b), highest resolution first.
    With ``fuse_all=False`` only the highest-resolution output is fused (and returned).

    The maps first go through ``branches`` (one block stack per branch) or, for families whose blocks mix the
    branches (Lite-HRNet), through ``blocks`` (each maps the whole list to a new list).

    ``fuse_mode``:

    - ``"sum"``: ``out_i = ReLU(sum_j f_ij(x_j))`` with ``f_ii`` the identity (HRNet, HRFormer, and the "clean"
      Lite-HRNet fusion).
    - ``"lite_official"``: what the official Lite-HRNet code computes (its fusion starts from ``y = x_0`` *aliased*,
      adds every ``j`` including ``j = 0`` in place; see ``../shared/docs/hrnet-family-facts.md`` section 0):
      ``s_0 = 2 x_0 + sum_{j>0} f_0j(x_j)``, ``out_0 = ReLU(s_0)``, and for ``i >= 1``
      ``out_i = ReLU(2 f_i0(s_0) + sum_{j>0} f_ij(x_j))``: branch 0 counts twice and the lower outputs see the
      pre-activation ``s_0``.  The released Lite-HRNet weights were trained with it.  ``f_i0`` is applied twice, as
      in the official code (the same output; BatchNorm running statistics are updated twice in training).
    """

    def __init__(self, channels: Sequence[int], branches: Sequence[nn.Module], fusion: str, fuse_upsample: str,
                 fuse_all: bool = True, *, blocks: Sequence[nn.Module] = (), fuse_mode: str = "sum"):
        super().__init__()
        if fuse_mode not in FUSE_MODES:
            raise ValueError(f"fuse_mode must be one of {FUSE_MODES}, got {fuse_mode!r}")
        if bool(branches) == bool(blocks):
            raise ValueError("give either per-branch `branches` or cross-branch `blocks`")
        self.branches = nn.ModuleList(branches)
        self.blocks = nn.Sequential(*blocks) if blocks else None
        self.fuse_mode = fuse_mode
        down_step = DOWN_STEPS[fusion]
        num_out = len(channels) if fuse_all else 1
        self.fuse_layers = nn.ModuleList()
        if len(channels) > 1:
            for i in range(num_out):
                self.fuse_layers.append(nn.ModuleList(
                    make_fuse_layer(channels, i, j, down_step, fuse_upsample) for j in range(len(channels))))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.blocks is not None:
            xs = self.blocks(xs)
        else:
            xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if not self.fuse_layers:
            return xs
        if self.fuse_mode == "lite_official":
            return self._fuse_lite_official(xs)
        outs = []
        for i, row in enumerate(self.fuse_layers):
            size = tuple(xs[i].shape[-2:])
            y = None
            for j, fuse in enumerate(row):
                term = fuse(xs[j], size)
                y = term if y is None else y + term
            outs.append(self.relu(y))
        return outs

    def _fuse_lite_official(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        row0 = self.fuse_layers[0]
        s0 = xs[0] + xs[0]
        for j in range(1, len(xs)):
            s0 = s0 + row0[j](xs[j], tuple(xs[0].shape[-2:]))
        outs = [self.relu(s0)]
        for i in range(1, len(self.fuse_layers)):
            row, size = self.fuse_layers[i], tuple(xs[i].shape[-2:])
            y = row[0](s0, size) + row[0](s0, size)
            for j in range(1, len(xs)):
                y = y + (xs[j] if j == i else row[j](xs[j], size))
            outs.append(self.relu(y))
        return outs


class Stem(nn.Module):
    """Two 3x3 stride-2 conv-BN-ReLU: (B, 3, H, W) -> (B, 64, H/4, W/4)."""

    def __init__(self, in_channels: int = 3, channels: int = 64):
        super().__init__()
        self.out_channels = channels
        self.conv1 = conv3x3(in_channels, channels, stride=2)
        self.bn1 = bn(channels)
        self.conv2 = conv3x3(channels, channels, stride=2)
        self.bn2 = bn(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_channels, out_channels, stride), bn(out_channels), nn.ReLU(inplace=True))


def _dwsep_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depth-wise conv3x3 + BN, point-wise conv1x1 + BN + ReLU (Lite-HRNet transitions)."""
    return nn.Sequential(conv3x3(in_channels, in_channels, stride, groups=in_channels), bn(in_channels),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), bn(out_channels), nn.ReLU(inplace=True))


TRANSITION_STEPS: dict[str, Callable[[int, int, int], nn.Sequential]] = {
    "conv": _conv_bn_relu,
    "dwsep": _dwsep_bn_relu,
}


class Transition(nn.ModuleList):
    """Adapts the previous stage's outputs to the next stage's branches.

    Existing branch ``i``: identity, or one stride-1 step when its width changes (fed ``y[i]``).
    New branch ``i``: a chain of stride-2 steps from the lowest-resolution previous output.
    A step is conv3x3 + BN + ReLU (``kind="conv"``, HRNet/HRFormer) or depth-wise conv3x3 + BN + conv1x1 + BN + ReLU
    (``kind="dwsep"``, Lite-HRNet).
    """

    def __init__(self, prev_channels: Sequence[int], channels: Sequence[int], kind: str = "conv"):
        if kind not in TRANSITION_STEPS:
            raise ValueError(f"transition must be one of {tuple(TRANSITION_STEPS)}, got {kind!r}")
        step = TRANSITION_STEPS[kind]
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            if i < len(prev_channels):
                layers.append(nn.Identity() if prev_channels[i] == c else step(prev_channels[i], c, 1))
            else:
                src = prev_channels[-1]
                n = i + 1 - len(prev_channels)
                layers.append(nn.Sequential(*(step(src, c if k == n - 1 else src, 2) for k in range(n))))
        super().__init__(layers)
        self.num_prev = len(prev_channels)

    def forward(self, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(ys[i] if i < self.num_prev else ys[-1]) for i, layer in enumerate(self)]


def drop_path_schedule(stages: Sequence[StageSpec], rate: float) -> list[list[list[float]]]:
    """Per stage, per module, per block-in-branch drop-path rates (the official HRFormer schedule).

    ``torch.linspace(0, rate, D)`` over ``D = sum(num_blocks[0] * num_modules)``; block ``k`` of module ``m``
    gets the same rate on every branch.
    """
    depths = [s.num_blocks[0] * s.num_modules for s in stages]
    rates = torch.linspace(0, rate, sum(depths), device="cpu").tolist()
    out, offset = [], 0
    for s, depth in zip(stages, depths, strict=True):
        nb = s.num_blocks[0]
        out.append([rates[offset + m * nb: offset + (m + 1) * nb] for m in range(s.num_modules)])
        offset += depth
    return out


OUTPUTS = ("branches", "v2", "v2p")
V2P_LEVELS = 5  # 1/4 (the HRNetV2 representation itself), 1/8, 1/16, 1/32, 1/64


def hrnetv2_representation(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """All branches upsampled (bilinear, align_corners=False as the HRNetV2p neck) to branch 0, concatenated.

    [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)] -> (B, C1 + ... + C4, H/4, W/4).
    """
    size = features[0].shape[-2:]
    return torch.cat([features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                      for f in features[1:]], dim=1)


def hrnetv2p_levels(features: Sequence[torch.Tensor], num_levels: int = V2P_LEVELS) -> list[torch.Tensor]:
    """HRNetV2p: the HRNetV2 representation and its average-pooled copies (kernel = stride = 2^k, k = 1..).

    Returns ``num_levels`` maps (B, sum C, H/4 / 2^k, W/4 / 2^k), k = 0 .. num_levels - 1.
    """
    rep = hrnetv2_representation(features)
    return [rep] + [F.avg_pool2d(rep, kernel_size=2**k, stride=2**k) for k in range(1, num_levels)]


class HRBackbone(nn.Module):
    """Generic high-resolution backbone: stem, stage 1, then transitions and stages of ``HRModule``.

    Args:
        spec: topology (stage-1 depth, per-stage modules/blocks/channels); ``stage1_blocks=0``: no stage 1.
        make_block: factory for the blocks inside branches.
        fusion: ``"conv"`` (HRNet) or ``"dwsep"`` (HRFormer, Lite-HRNet) downsampling in fusion layers.
        fuse_upsample: ``"nearest"``, ``"bilinear"`` or ``"bilinear_align_corners"``.
        multiscale_output: if False the last module fuses (and the backbone returns) only the highest branch.
        drop_path_rate: maximum stochastic-depth rate of the linear schedule over stages 2..4.
        stem: the stem module (it must have ``out_channels``); default: two 3x3 stride-2 conv-BN-ReLU to 64.
        transition: ``"conv"`` or ``"dwsep"`` steps in the transitions (see :class:`Transition`).
        make_module_blocks: instead of ``make_block``, blocks acting on the whole list of branches (Lite-HRNet).
        fuse_mode: ``"sum"`` or ``"lite_official"`` (see :class:`HRModule`).
        output: ``"branches"`` (the list of branch maps), ``"v2"`` ([HRNetV2 representation]) or ``"v2p"``
            (HRNetV2p: the representation and its average-pooled copies at 1/8 .. 1/64); the last two need
            ``multiscale_output=True``.

    forward: (B, 3, H, W) -> list of (B, C_b, H / 2^(b+2), W / 2^(b+2)); attributes ``out_channels`` and
    ``strides`` describe that list.
    """

    def __init__(self, spec: ScaffoldSpec, make_block: BlockFactory | None = None, fusion: str = "conv",
                 fuse_upsample: str = "nearest", multiscale_output: bool = True, drop_path_rate: float = 0.0, *,
                 stem: nn.Module | None = None, transition: str = "conv",
                 make_module_blocks: ModuleBlocksFactory | None = None, fuse_mode: str = "sum",
                 output: str = "branches"):
        super().__init__()
        if fusion not in DOWN_STEPS:
            raise ValueError(f"fusion must be one of {tuple(DOWN_STEPS)}, got {fusion!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output != "branches" and not multiscale_output:
            raise ValueError(f"output={output!r} concatenates every branch: it needs multiscale_output=True")
        if (make_block is None) == (make_module_blocks is None):
            raise ValueError("give exactly one of make_block and make_module_blocks")
        self.spec = spec
        self.stem = Stem() if stem is None else stem
        if spec.stage1_blocks:
            self.stage1 = make_layer(Bottleneck, self.stem.out_channels, spec.stage1_channels, spec.stage1_blocks)
            prev = [spec.stage1_channels * Bottleneck.expansion]
        else:
            self.stage1 = nn.Identity()
            prev = [self.stem.out_channels]
        schedule = drop_path_schedule(spec.stages, drop_path_rate)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s, stage in enumerate(spec.stages):
            self.transitions.append(Transition(prev, stage.channels, transition))
            last_stage = s == len(spec.stages) - 1
            modules = []
            for m in range(stage.num_modules):
                fuse_all = not (last_stage and m == stage.num_modules - 1 and not multiscale_output)
                if make_module_blocks is not None:
                    blocks = make_module_blocks(tuple(stage.channels), s, m)
                    modules.append(HRModule(stage.channels, [], fusion, fuse_upsample, fuse_all, blocks=blocks,
                                            fuse_mode=fuse_mode))
                    continue
                branches = [
                    nn.Sequential(*(make_block(c, s, b, schedule[s][m][k]) for k in range(stage.num_blocks[b])))
                    for b, c in enumerate(stage.channels)
                ]
                modules.append(HRModule(stage.channels, branches, fusion, fuse_upsample, fuse_all,
                                        fuse_mode=fuse_mode))
            self.stages.append(nn.Sequential(*modules))
            prev = list(stage.channels)
        self.output = output
        self.branch_channels: tuple[int, ...] = tuple(prev)
        n_out = len(prev) if multiscale_output else 1
        if output == "branches":
            self.out_channels: tuple[int, ...] = tuple(prev[:n_out])
            self.strides: tuple[int, ...] = tuple(4 * 2 ** b for b in range(n_out))
        else:
            levels = 1 if output == "v2" else V2P_LEVELS
            self.out_channels = (sum(prev),) * levels
            self.strides = tuple(4 * 2 ** k for k in range(levels))

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the last stage's branch maps, highest resolution first."""
        ys = [self.stage1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages, strict=True):
            ys = stage(transition(ys))
        return ys

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ys = self.forward_branches(x)
        if self.output == "v2":
            return [hrnetv2_representation(ys)]
        if self.output == "v2p":
            return hrnetv2p_levels(ys)
        return ys


# --------------------------------------------------------------------------------------------------
# Official checkpoints (HRNet and HRFormer code bases share the scaffold's names)
# --------------------------------------------------------------------------------------------------

class ScaffoldRules(CheckpointRules):
    """Official scaffold names -> ours: ``conv1/bn1/conv2/bn2`` -> ``stem.*``, ``layer1`` -> ``stage1``,
    ``transitionN`` -> ``transitions.{N-1}``, ``stageN`` -> ``stages.{N-2}``; everything else is the head's."""

    backbone_roots = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage")
    backbone_rules = [
        (re.compile(r"^(conv1|bn1|conv2|bn2)\."), r"stem.\1."),
        (re.compile(r"^layer1\."), "stage1."),
        (re.compile(r"^transition(\d)\."), lambda m: f"transitions.{int(m[1]) - 1}."),
        (re.compile(r"^stage([2-9])\."), lambda m: f"stages.{int(m[1]) - 2}."),
    ]

    @staticmethod
    def multiscale(backbone: dict) -> bool:
        """True when the last module fuses every branch (cls/seg), False for the single-output pose layout."""
        return fuse_rows_of_last_module(backbone) > 1

    @staticmethod
    def has(head: dict, *prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in head)

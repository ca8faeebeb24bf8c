"""HRNet (Wang et al., TPAMI 2020): the multi-resolution scaffold with BasicBlock branches.

Variant configurations are those of the official repositories (deep-high-resolution-net.pytorch,
HRNet-Image-Classification, HRNet-Semantic-Segmentation).  Fusion downsampling uses full 3x3 stride-2
convs.  ``fuse_upsample``: ``"nearest"`` (pose, classification checkpoints) or
``"bilinear_align_corners"`` (segmentation checkpoints).

``output="v2p"`` gives HRNetV2p, the multi-level representation for detectors: the HRNetV2 representation
(all branches upsampled to 1/4 and concatenated) and its average-pooled copies at 1/8, 1/16, 1/32 and 1/64
(strides 4 .. 64, ``sum(C)`` channels each); ``output="v2"`` gives the representation alone.  Detection necks
(mmdetection's ``HRFPN``: 1x1 reduction, then a 3x3 conv per level) go on top; they are not part of the backbone.
"""

from __future__ import annotations

from functools import partial

from .blocks import BasicBlock
from .registry import register_backbone
from .scaffold import HRBackbone, ScaffoldSpec, StageSpec


def _wide(width: int) -> ScaffoldSpec:
    c = (width, 2 * width, 4 * width, 8 * width)
    return ScaffoldSpec(
        stage1_blocks=4, stage1_channels=64,
        stages=(StageSpec(1, (4, 4), c[:2]), StageSpec(4, (4, 4, 4), c[:3]), StageSpec(3, (4, 4, 4, 4), c)),
    )


HRNET_SPECS: dict[str, ScaffoldSpec] = {
    "hrnet_w18_small_v1": ScaffoldSpec(
        stage1_blocks=1, stage1_channels=32,
        stages=(StageSpec(1, (2, 2), (16, 32)), StageSpec(1, (2, 2, 2), (16, 32, 64)),
                StageSpec(1, (2, 2, 2, 2), (16, 32, 64, 128))),
    ),
    "hrnet_w18_small_v2": ScaffoldSpec(
        stage1_blocks=2, stage1_channels=64,
        stages=(StageSpec(1, (2, 2), (18, 36)), StageSpec(3, (2, 2, 2), (18, 36, 72)),
                StageSpec(2, (2, 2, 2, 2), (18, 36, 72, 144))),
    ),
    "hrnet_w18": _wide(18),
    "hrnet_w32": _wide(32),
    "hrnet_w48": _wide(48),
}


def _basic_block(channels: int, stage: int, branch: int, drop_path: float) -> BasicBlock:
    return BasicBlock(channels, channels)


class HRNet(HRBackbone):
    """HRNet backbone.  forward: (B, 3, H, W) -> [(B, C, H/4, W/4), (B, 2C, H/8, W/8), ...].

    ``output``: ``"branches"`` (HRNetV1/V2 use the branch list), ``"v2"`` or ``"v2p"`` (see the module docstring).
    """

    def __init__(self, spec: ScaffoldSpec, multiscale_output: bool = True, fuse_upsample: str = "nearest",
                 output: str = "branches"):
        super().__init__(spec, _basic_block, fusion="conv", fuse_upsample=fuse_upsample,
                         multiscale_output=multiscale_output, output=output)


for _name, _spec in HRNET_SPECS.items():
    register_backbone(_name, partial(HRNet, _spec), family="hrnet")

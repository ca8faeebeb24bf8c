"""HRNet (Wang et al., TPAMI 2020): the multi-resolution scaffold with BasicBlock branches.

Variant configurations are those of the official repositories (deep-high-resolution-net.pytorch,
HRNet-Image-Classification, HRNet-Semantic-Segmentation).  Fusion downsampling uses full 3x3 stride-2
convs.  ``fuse_upsample``: ``"nearest"`` (pose, classification checkpoints), ``"bilinear_resize"`` (HRNetV2
segmentation checkpoints: bilinear with align_corners=False straight to the size) or ``"bilinear_align_corners"``
(HRNet-OCR checkpoints).  ``HRNetRules`` reads every official checkpoint layout (see ``convert.py``).

``output="v2p"`` gives HRNetV2p, the multi-level representation for detectors: the HRNetV2 representation
(all branches upsampled to 1/4 and concatenated) and its average-pooled copies at 1/8, 1/16, 1/32 and 1/64
(strides 4 .. 64, ``sum(C)`` channels each); ``output="v2"`` gives the representation alone.  Detection necks
(mmdetection's ``HRFPN``: 1x1 reduction, then a 3x3 conv per level) go on top; they are not part of the backbone.
"""

from __future__ import annotations

from functools import partial

from .blocks import BasicBlock
from .convert import Layout
from .registry import register_backbone, register_family_rules
from .scaffold import HRBackbone, ScaffoldRules, ScaffoldSpec, StageSpec


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


class HRNetRules(ScaffoldRules):
    """The official HRNet checkpoints, told apart by their head keys:

    - HRNet-Image-Classification (``incre_modules``, ``downsamp_modules``, ``final_layer.0``, ``classifier``): all
      four branches, nearest fusion upsampling;
    - HRNet-Semantic-Segmentation HRNetV2 (``last_layer``): bilinear with align_corners=False (``F.upsample`` on
      the pytorch-v1.1/master branches, ``ALIGN_CORNERS: False`` in the HRNet-OCR branch's HRNetV2 configs) in the
      fusion and the head;
    - HRNet-Semantic-Segmentation HRNet-OCR (``conv3x3_ocr``, ``ocr_*``, ``aux_head``, ``cls_head``): bilinear
      with align_corners=True (the branch's default);
    - deep-high-resolution-net pose (``final_layer.weight``): single-output last module, nearest upsampling;
    - no head (ImageNet backbones): nearest upsampling, the fuse rows decide the output.

    ``align_corners`` given to the converter overrides the segmentation default.
    """

    def layout(self, backbone: dict, head: dict, hints: dict) -> Layout:
        multiscale = self.multiscale(backbone)
        if self.has(head, "incre_modules.", "classifier."):
            return Layout("HRNet-Image-Classification", "cls", {"multiscale_output": True, "fuse_upsample": "nearest"},
                          "hr-cls")
        ocr = self.has(head, "conv3x3_ocr.", "ocr_distri_head.")
        if ocr or self.has(head, "last_layer."):
            align = hints.get("align_corners")
            align = ocr if align is None else align
            options = {"multiscale_output": True,
                       "fuse_upsample": "bilinear_align_corners" if align else "bilinear_resize"}
            if ocr:
                return Layout("HRNet-Semantic-Segmentation (HRNet-OCR)", "seg", options, "hrnet-ocr",
                              {"align_corners": align})
            return Layout("HRNet-Semantic-Segmentation (HRNetV2)", "seg", options, "upsample-concat",
                          {"align_corners": align})
        if "final_layer.weight" in head:
            return Layout("deep-high-resolution-net (pose)", "pose",
                          {"multiscale_output": multiscale, "fuse_upsample": "nearest"}, "heatmap-1x1",
                          {"kernel_size": head["final_layer.weight"].shape[-1]})
        return Layout("HRNet (backbone)", None, {"multiscale_output": multiscale, "fuse_upsample": "nearest"})


register_family_rules("hrnet", HRNetRules())

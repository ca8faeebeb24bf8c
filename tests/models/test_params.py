"""Parameter counts equal those of the official models (measured from the official code, see ../shared/docs)."""

from __future__ import annotations

import pytest
from torch import nn

from hrformer.models import HeatmapHead, HRClassificationHead, UpsampleConcatHead, build_backbone


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(("name", "expected"), [
    ("hrformer_t", 2_524_436), ("hrformer_s", 7_746_218), ("hrformer_b", 43_210_434),
])
def test_hrformer_pose_backbone(name, expected):
    assert n_params(build_backbone(name, multiscale_output=False)) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("hrformer_t", 2_572_388), ("hrformer_s", 7_891_050), ("hrformer_b", 44_040_666),
])
def test_hrformer_multiscale_backbone(name, expected):
    assert n_params(build_backbone(name, multiscale_output=True)) == expected


@pytest.mark.parametrize(("name", "expected"), [("hrnet_w32", 28_536_113), ("hrnet_w48", 63_595_745)])
def test_hrnet_pose_with_head(name, expected):
    backbone = build_backbone(name, multiscale_output=False)
    assert n_params(backbone, HeatmapHead(backbone.out_channels[0], 17)) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("hrnet_w18_small_v1", 13_187_464), ("hrnet_w18_small_v2", 15_597_464), ("hrnet_w18", 21_299_004),
    ("hrnet_w32", 41_232_680), ("hrnet_w48", 77_469_864),
    ("hrformer_t", 8_035_820), ("hrformer_s", 13_544_882), ("hrformer_b", 50_320_098),
])
def test_classification_models(name, expected):
    backbone = build_backbone(name)
    head = HRClassificationHead(backbone.out_channels, num_classes=1000, depthwise=name.startswith("hrformer"))
    assert n_params(backbone, head) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("hrnet_w18_small_v1", 1_540_819), ("hrnet_w18_small_v2", 3_939_579), ("hrnet_w48", 65_859_379),
])
def test_hrnetv2_segmentation_cityscapes(name, expected):
    backbone = build_backbone(name, fuse_upsample="bilinear_resize")
    assert n_params(backbone, UpsampleConcatHead(backbone.out_channels, num_classes=19)) == expected

"""UniFormer: official parameter counts and key names, layouts, shapes, gradients, heads (classification,
SimpleBaseline pose, Semantic FPN) and checkpoint layouts.  That the blocks compute what the official code computes
is tested against the official code's outputs (tests/models/test_official_equivalence.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hrformer.models import (
    DeconvHeatmapHead,
    SemanticFPNHead,
    UniFormerClsHead,
    build_backbone,
    convert_official,
)
from hrformer.models.uniformer import GlobalMHRABlock


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(("name", "expected"), [
    ("uniformer_s", 21_545_256), ("uniformer_s_plus", 24_032_552), ("uniformer_b", 49_776_552),
])
def test_classification_parameter_counts(name, expected):
    with torch.device("meta"):
        backbone = build_backbone(name, output_norms=False, multiscale_output=False)
        assert n_params(backbone, UniFormerClsHead(backbone.out_channels, 1000)) == expected


@pytest.mark.parametrize(("name", "backbone_params", "pose_params"), [
    ("uniformer_s", 21_033_280, 25_233_489), ("uniformer_b", 49_264_576, 53_464_785),
])
def test_pose_parameter_counts(name, backbone_params, pose_params):
    """The official pose backbone (with norm1..norm4) and the SimpleBaseline head of its pose models."""
    with torch.device("meta"):
        backbone = build_backbone(name, multiscale_output=False)
        assert n_params(backbone) == backbone_params
        assert n_params(backbone, DeconvHeatmapHead(backbone.out_channels, 17)) == pose_params


def test_official_key_names_and_shapes():
    """Keys of the official classification model (``../shared/docs/hrnet-family-facts.md`` section 1c)."""
    with torch.device("meta"):
        sd = build_backbone("uniformer_s", output_norms=False, multiscale_output=False).state_dict()
        sd |= UniFormerClsHead(512).state_dict()
        plus = build_backbone("uniformer_s_plus", output_norms=False, multiscale_output=False).state_dict()
    expected = {
        "patch_embed1.proj.weight": (64, 3, 4, 4), "patch_embed1.norm.weight": (64,),
        "blocks1.0.pos_embed.weight": (64, 1, 3, 3), "blocks1.0.norm1.running_mean": (64,),
        "blocks1.0.conv1.weight": (64, 64, 1, 1), "blocks1.0.attn.weight": (64, 1, 5, 5),
        "blocks1.0.mlp.fc1.weight": (256, 64, 1, 1), "blocks3.0.attn.qkv.weight": (960, 320),
        "blocks3.0.attn.qkv.bias": (960,), "blocks3.0.attn.proj.weight": (320, 320),
        "blocks3.0.mlp.fc1.weight": (1280, 320), "blocks4.2.norm2.bias": (512,), "norm.running_var": (512,),
        "head.weight": (1000, 512),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "blocks4.3.norm1.weight" not in sd and "norm1.weight" not in sd
    conv_stem = {"patch_embed1.proj.0.weight": (32, 3, 3, 3), "patch_embed1.proj.1.running_mean": (32,),
                 "patch_embed1.proj.3.weight": (64, 32, 3, 3), "patch_embed2.proj.0.weight": (128, 64, 3, 3),
                 "patch_embed4.proj.1.bias": (512,), "blocks2.4.attn.weight": (128, 1, 5, 5)}
    for key, shape in conv_stem.items():
        assert tuple(plus[key].shape) == shape, key


@pytest.mark.parametrize("name", ["uniformer_s", "uniformer_s_plus"])
def test_shapes_and_strides(name):
    x = torch.randn(1, 3, 64, 96)
    seg = build_backbone(name).eval()
    pose = build_backbone(name, multiscale_output=False).eval()
    assert (seg.out_channels, seg.strides) == ((64, 128, 320, 512), (4, 8, 16, 32))
    assert (pose.out_channels, pose.strides) == ((512,), (32,))
    with torch.no_grad():
        for model in (seg, pose):
            assert [tuple(o.shape) for o in model(x)] == [
                (1, c, 64 // s, 96 // s) for c, s in zip(model.out_channels, model.strides, strict=True)]


def test_every_parameter_receives_a_gradient_and_unused_pose_norms_are_frozen():
    torch.manual_seed(0)
    model = build_backbone("uniformer_s").train()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing[:5]}"
    pose = build_backbone("uniformer_s", multiscale_output=False)
    frozen = sorted({n.split(".")[0] for n, p in pose.named_parameters() if not p.requires_grad})
    assert frozen == ["norm1", "norm2", "norm3"]


def test_drop_path_schedule():
    model = build_backbone("uniformer_b", drop_path_rate=0.4)
    rates = torch.linspace(0, 0.4, 40).tolist()
    assert model.blocks1[0].drop_path.p == 0.0
    assert model.blocks3[2].drop_path.p == pytest.approx(rates[5 + 8 + 2])
    assert model.blocks4[6].drop_path.p == pytest.approx(0.4)


def test_heads_shapes():
    feats = [torch.randn(2, c, 64 // s, 96 // s) for c, s in zip((64, 128, 320, 512), (4, 8, 16, 32), strict=True)]
    assert DeconvHeatmapHead((512,), 17)(feats[-1:]).shape == (2, 17, 16, 24)
    assert UniFormerClsHead(512, 10).eval()(feats[-1:]).shape == (2, 10)
    assert SemanticFPNHead((64, 128, 320, 512), 5)(feats).shape == (2, 5, 16, 24)
    with pytest.raises(ValueError, match="multiscale_output"):
        SemanticFPNHead((512,), 5)


def test_semantic_fpn_keys_and_count():
    """mmseg names (neck.lateral_convs/fpn_convs, decode_head.scale_heads/conv_seg); the ADE20K model of UniFormer-S:
    backbone 21,033,280 + FPN 2,623,488 + decoder 1,643,158 = 25,299,926 (published: 25M)."""
    with torch.device("meta"):
        head = SemanticFPNHead((64, 128, 320, 512), 150)
        backbone = build_backbone("uniformer_s")
    sd = head.state_dict()
    for key in ("neck.lateral_convs.0.conv.weight", "neck.lateral_convs.3.conv.bias", "neck.fpn_convs.2.conv.weight",
                "decode_head.scale_heads.0.0.conv.weight", "decode_head.scale_heads.2.2.bn.running_var",
                "decode_head.scale_heads.3.4.conv.weight", "decode_head.conv_seg.bias"):
        assert key in sd, key
    assert "decode_head.scale_heads.0.0.conv.bias" not in sd  # ConvModule with BN: no conv bias
    assert (n_params(head.neck), n_params(head.decode_head)) == (2_623_488, 1_643_158)
    assert n_params(backbone, head) == 25_299_926


def test_segmentation_checkpoint_layout():
    """mmseg (backbone. + neck. + decode_head.): the four normalised maps and Semantic FPN."""
    with torch.device("meta"):
        backbone = build_backbone("uniformer_s").state_dict()
        seg_head = SemanticFPNHead((64, 128, 320, 512), 150).state_dict()
    seg = {"state_dict": {**{f"backbone.{k}": v for k, v in backbone.items()}, **seg_head}}
    converted = convert_official(seg, "uniformer_s")
    assert converted.backbone.keys() == backbone.keys() and converted.head.keys() == seg_head.keys()
    assert (converted.layout.task, converted.layout.head) == ("seg", "semantic-fpn")
    assert converted.layout.backbone_options == {"output_norms": True, "multiscale_output": True}


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="output_norms"):
        build_backbone("uniformer_s", multiscale_output=True, output_norms=False)
    with pytest.raises(TypeError, match="window_size"):
        build_backbone("uniformer_s", window_size=14)
    with pytest.raises(ValueError, match="divisible"):
        GlobalMHRABlock(320, num_heads=3)

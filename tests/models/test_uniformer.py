"""UniFormer: official parameter counts and key names, the blocks against the official computation written out,
layouts, shapes, gradients, heads (classification, SimpleBaseline pose, Semantic FPN) and checkpoint conversion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrformer.models import (
    DeconvHeatmapHead,
    SemanticFPNHead,
    UniFormerClsHead,
    build_backbone,
    split_official_state_dict,
)
from hrformer.models.uniformer import GlobalMHRABlock, LocalMHRABlock
from tests.conftest import load_script


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


def _randomize(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith(("running_var", "norm1.weight", "norm2.weight")):
                t.uniform_(0.5, 1.5)
            else:
                t.normal_(0, 0.2)
    return module


def test_global_block_is_the_official_computation():
    """pos-embed, then softmax(q k^T * hd^-0.5) v with qkv channels ordered (3, heads, hd), proj, MLP; LN eps 1e-6."""
    block = _randomize(GlobalMHRABlock(32, num_heads=4).double().eval())
    x = torch.randn(2, 32, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        y = x + block.pos_embed(x)
        t = y.flatten(2).transpose(1, 2)  # (B, N, C)
        n1 = F.layer_norm(t, (32,), block.norm1.weight, block.norm1.bias, 1e-6)
        qkv = F.linear(n1, block.attn.qkv.weight, block.attn.qkv.bias).reshape(2, 15, 3, 4, 8).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * 8**-0.5).softmax(-1)
        t = t + F.linear((attn @ qkv[2]).transpose(1, 2).reshape(2, 15, 32), block.attn.proj.weight,
                         block.attn.proj.bias)
        n2 = F.layer_norm(t, (32,), block.norm2.weight, block.norm2.bias, 1e-6)
        t = t + block.mlp.fc2(F.gelu(block.mlp.fc1(n2)))
        expected = t.transpose(1, 2).reshape(2, 32, 5, 3)
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_local_block_is_the_official_computation():
    block = _randomize(LocalMHRABlock(16).double().eval())
    x = torch.randn(2, 16, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        y = x + F.conv2d(x, block.pos_embed.weight, block.pos_embed.bias, padding=1, groups=16)
        bn1 = block.norm1
        n1 = (y - bn1.running_mean[:, None, None]) / (bn1.running_var[:, None, None] + 1e-5).sqrt()
        n1 = n1 * bn1.weight[:, None, None] + bn1.bias[:, None, None]
        a = F.conv2d(F.conv2d(n1, block.conv1.weight, block.conv1.bias), block.attn.weight, block.attn.bias,
                     padding=2, groups=16)
        y = y + F.conv2d(a, block.conv2.weight, block.conv2.bias)
        expected = y + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(y))))
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


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


def _script():
    return load_script("convert_checkpoint")


def test_classification_checkpoint_round_trip():
    """{'model': ...} with norm/head: backbone (no stage-output norms) + UniFormerClsHead, same logits."""
    torch.manual_seed(0)
    backbone = build_backbone("uniformer_s", output_norms=False, multiscale_output=False).eval()
    head = _randomize(UniFormerClsHead(512, 1000)).eval()
    official = {"model": {**backbone.state_dict(), **head.state_dict()}, "epoch": 299}
    backbone_sd, head_sd = split_official_state_dict(official, "uniformer_s")
    assert set(head_sd) == {"norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                            "norm.num_batches_tracked", "head.weight", "head.bias"}
    assert _script().detect_options("uniformer_s", backbone_sd, head_sd) == {"output_norms": False,
                                                                             "multiscale_output": False}
    b2 = build_backbone("uniformer_s", output_norms=False, multiscale_output=False).eval()
    b2.load_state_dict(backbone_sd, strict=True)
    h2 = UniFormerClsHead(512).eval()
    h2.load_state_dict(head_sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(h2(b2(x)), head(backbone(x)))


def test_pose_and_segmentation_checkpoints_split():
    """mmpose (backbone. + keypoint_head.) and mmseg (backbone. + neck. + decode_head.) containers."""
    with torch.device("meta"):
        backbone = build_backbone("uniformer_s", multiscale_output=False).state_dict()
        pose_head = DeconvHeatmapHead(512, 17).state_dict()
        seg_head = SemanticFPNHead((64, 128, 320, 512), 150).state_dict()
    script = _script()
    pose = {"state_dict": {**{f"backbone.{k}": v for k, v in backbone.items()},
                           **{f"keypoint_head.{k}": v for k, v in pose_head.items()}}}
    b, h = split_official_state_dict(pose, "uniformer_s")
    assert b.keys() == backbone.keys() and h.keys() == pose_head.keys()
    assert "deconv_layers.6.weight" in h and "deconv_layers.7.running_mean" in h
    assert script.detect_options("uniformer_s", b, h) == {"output_norms": True, "multiscale_output": False}
    seg = {"state_dict": {**{f"backbone.{k}": v for k, v in backbone.items()}, **seg_head}}
    b, h = split_official_state_dict(seg, "uniformer_s")
    assert b.keys() == backbone.keys() and h.keys() == seg_head.keys()
    assert script.detect_options("uniformer_s", b, h) == {"output_norms": True, "multiscale_output": True}


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="output_norms"):
        build_backbone("uniformer_s", multiscale_output=True, output_norms=False)
    with pytest.raises(TypeError, match="window_size"):
        build_backbone("uniformer_s", window_size=14)
    with pytest.raises(ValueError, match="divisible"):
        GlobalMHRABlock(320, num_heads=3)

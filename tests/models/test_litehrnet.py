"""Lite-HRNet: the official outputs (../shared/reference), the fusion arithmetic, counts, shapes, gradients, keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrformer.models import HeatmapHead, build_backbone, convert_official_state_dict, split_official_state_dict
from hrformer.models.blocks import channel_shuffle
from hrformer.models.litehrnet import LITEHRNET_CONFIGS, LiteHRNet, LiteHRNetConfig
from hrformer.models.scaffold import HRModule
from tests.conftest import as_float32, load_script, max_rel_err

TOL = 1e-4
VARIANTS = ("litehrnet_18", "litehrnet_30", "naive_litehrnet_18", "wider_naive_litehrnet_18")


@pytest.fixture(scope="module")
def ref(load_reference):
    return load_reference("ref_litehrnet18_pose.pt")


@pytest.fixture(scope="module")
def converted(ref):
    backbone_sd, head_sd = split_official_state_dict(ref["state_dict"], "litehrnet_18")
    return as_float32(backbone_sd), as_float32(head_sd)


def test_official_fusion_reproduces_the_official_model(ref, converted):
    """Converted official weights, default options: backbone output and heatmaps equal the official code's."""
    backbone_sd, head_sd = converted
    model = build_backbone("litehrnet_18").eval()
    model.load_state_dict(backbone_sd, strict=True)
    head = HeatmapHead(model.out_channels, num_joints=17).eval()
    head.load_state_dict(head_sd, strict=True)
    with torch.no_grad():
        feats = model(ref["input"])
        heatmaps = head(feats)
    assert len(feats) == 1 and feats[0].shape == ref["backbone_feat"].shape == (2, 40, 64, 48)
    assert max_rel_err(feats[0], ref["backbone_feat"]) < TOL
    assert max_rel_err(heatmaps, ref["output"]) < TOL


def test_clean_fusion_is_another_function(ref, converted):
    """The clean option really changes the computation (the official weights need the default)."""
    model = build_backbone("litehrnet_18", clean_fusion=True).eval()
    model.load_state_dict(converted[0], strict=True)
    with torch.no_grad():
        out = model(ref["input"])[0]
    assert max_rel_err(out, ref["backbone_feat"]) > 0.1


def test_fusion_arithmetic_of_both_modes():
    """lite_official: s0 = 2 x0 + sum_j>0 f0j(xj); out_i = ReLU(2 f_i0(s0) + sum_j>0 f_ij(xj)); sum: HRNet's."""
    torch.manual_seed(0)
    channels = (4, 8, 16)
    modules = {mode: HRModule(channels, [torch.nn.Identity()] * 3, "dwsep", "nearest", fuse_mode=mode).double().eval()
               for mode in ("lite_official", "sum")}
    modules["sum"].load_state_dict(modules["lite_official"].state_dict())
    xs = [torch.randn(2, c, 16 // 2**b, 12 // 2**b, dtype=torch.float64) for b, c in enumerate(channels)]
    f = modules["lite_official"].fuse_layers
    with torch.no_grad():
        official = modules["lite_official"](list(xs))
        clean = modules["sum"](list(xs))
        s0 = 2 * xs[0] + f[0][1](xs[1], (16, 12)) + f[0][2](xs[2], (16, 12))
        expected = [F.relu(s0),
                    F.relu(2 * f[1][0](s0) + xs[1] + f[1][2](xs[2], (8, 6))),
                    F.relu(2 * f[2][0](s0) + f[2][1](xs[1]) + xs[2])]
        expected_clean = [F.relu(sum(f[i][j](xs[j], tuple(xs[i].shape[-2:])) for j in range(3))) for i in range(3)]
    for out, exp in zip(official, expected, strict=True):
        torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-12)
    for out, exp in zip(clean, expected_clean, strict=True):
        torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "expected"), [
    ("litehrnet_18", 1_130_769), ("litehrnet_30", 1_763_717),
    ("naive_litehrnet_18", 760_365), ("wider_naive_litehrnet_18", 1_318_625),
])
def test_parameter_counts_with_the_1x1_pose_head(name, expected):
    backbone = build_backbone(name)
    head = HeatmapHead(backbone.out_channels, num_joints=17)
    assert sum(p.numel() for m in (backbone, head) for p in m.parameters()) == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_strides(name):
    """Default: the iterative head's 1/4 map, as the official backbone."""
    model = build_backbone(name).eval()
    c = LITEHRNET_CONFIGS[name].channels
    assert (model.out_channels, model.strides) == ((c[0],), (4,))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, c[0], 16, 24)]


def test_multiscale_and_headless_outputs():
    """multiscale: the head's four outputs (C1, C1, C2, C3); without the head: the raw branches (C1..C4)."""
    multi = build_backbone("litehrnet_18", multiscale_output=True).eval()
    raw = build_backbone("litehrnet_18", multiscale_output=True, with_head=False).eval()
    assert (multi.out_channels, multi.strides) == ((40, 40, 80, 160), (4, 8, 16, 32))
    assert (raw.out_channels, raw.strides) == ((40, 80, 160, 320), (4, 8, 16, 32))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for model in (multi, raw):
            assert [tuple(o.shape) for o in model(x)] == [
                (1, ch, 64 // s, 96 // s) for ch, s in zip(model.out_channels, model.strides, strict=True)]


@pytest.mark.parametrize("name", ["litehrnet_18", "naive_litehrnet_18"])
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(0)
    model = build_backbone(name).train()
    for p in model.parameters():  # the official init (std 0.001) gives gradients too small to see in float32
        torch.nn.init.normal_(p, std=0.3) if p.ndim > 1 else torch.nn.init.uniform_(p, 0.5, 1.5)
    model(torch.randn(2, 3, 64, 48))[0].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing[:5]}"


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(ValueError, match="groups"):
        channel_shuffle(torch.zeros(1, 5, 1, 1), 2)


def test_official_key_names_convert(ref):
    converted = convert_official_state_dict(ref["state_dict"], "litehrnet_18")
    pairs = {
        "backbone.stem.branch1.0.conv.weight": "stem.branch1.0.conv.weight",
        "backbone.transition0.1.0.2.weight": "transitions.0.1.0.2.weight",
        "backbone.stage0.0.layers.0.cross_resolution_weighting.conv1.conv.weight":
            "stages.0.0.blocks.0.cross_resolution_weighting.conv1.conv.weight",
        "backbone.stage2.0.layers.1.spatial_weighting.3.conv2.conv.bias":
            "stages.2.0.blocks.1.spatial_weighting.3.conv2.conv.bias",
        "backbone.stage0.0.fuse_layers.1.0.0.0.weight": "stages.0.0.fuse_layers.1.0.0.0.weight",
        "backbone.head_layer.projects.3.pointwise_conv.bn.weight": "head_layer.projects.3.pointwise_conv.bn.weight",
    }
    for official, ours in pairs.items():
        assert torch.equal(converted[ours], ref["state_dict"][official])


def test_naive_checkpoint_layout_converts():
    """Naive modules: official ``stageN.M.layers.<branch>.<unit>.branch2`` -> our per-branch ``branches``."""
    ours = build_backbone("naive_litehrnet_18").state_dict()

    def official_name(key: str) -> str:
        key = key.replace("transitions.", "transition").replace("stages.", "stage").replace(".branches.", ".layers.")
        return "backbone." + key

    official = {official_name(k): v for k, v in ours.items()}
    assert "backbone.stage1.3.layers.2.1.branch2.1.conv.weight" in official
    converted = convert_official_state_dict({"state_dict": official}, "naive_litehrnet_18")
    assert converted.keys() == ours.keys()
    build_backbone("naive_litehrnet_18").load_state_dict(converted, strict=True)


def test_convert_script_round_trip(ref, tmp_path):
    script = load_script("convert_checkpoint")
    src, dst = tmp_path / "litehrnet_18_coco_256x192.pth", tmp_path / "converted.pth"
    torch.save({"meta": {}, "state_dict": ref["state_dict"]}, src)
    meta = script.convert(src, dst, "litehrnet_18", None)
    assert meta["backbone_options"] == {} and meta["head_keys"] == ["final_layer.bias", "final_layer.weight"]
    sd = as_float32(torch.load(dst, weights_only=True)["state_dict"])
    model = build_backbone("litehrnet_18").eval()
    model.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}, strict=True)
    head = HeatmapHead(40).eval()
    head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")}, strict=True)
    with torch.no_grad():
        assert max_rel_err(head(model(ref["input"])), ref["output"]) < TOL
    with pytest.raises(SystemExit, match="does not fit litehrnet_30"):
        script.convert(src, tmp_path / "wrong.pth", "litehrnet_30", None)


def test_bad_options_are_errors():
    with pytest.raises(TypeError, match="rpe"):
        build_backbone("litehrnet_18", rpe=True)
    with pytest.raises(ValueError, match="module_type"):
        LiteHRNet(LiteHRNetConfig(num_modules=(1, 1, 1), channels=(8, 16, 32, 64), module_type="dense"))
    with pytest.raises(ValueError, match="fuse_mode"):
        HRModule((4, 8), [torch.nn.Identity()] * 2, "dwsep", "nearest", fuse_mode="twice")

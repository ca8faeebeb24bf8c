"""Official classification checkpoints ({'model': ...}, official key names, head included) convert with
scripts/convert_checkpoint.py and load strictly into the classification module built from the Hydra config."""

from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir

from hrformer.models import HRClassificationHead, build_backbone
from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import build_module
from tests.conftest import as_float32, load_script, max_rel_err

# our scaffold names -> the official ones (the inverse of the converter's renaming)
TO_OFFICIAL = [(r"^stem\.", ""), (r"^stage1\.", "layer1."),
               (r"^transitions\.(\d)\.", lambda m: f"transition{int(m[1]) + 1}."),
               (r"^stages\.(\d)\.", lambda m: f"stage{int(m[1]) + 2}.")]


def random_like(key: str, value: torch.Tensor) -> torch.Tensor:
    """Random weights that keep BatchNorm meaningful (positive running variances)."""
    if not value.is_floating_point():
        return value
    return torch.rand_like(value) + 0.5 if key.endswith("running_var") else torch.randn_like(value)


@pytest.fixture(scope="module")
def converter():
    return load_script("convert_checkpoint")


def cls_module(backbone: str, init_checkpoint, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cls_imagenet", f"backbone={backbone}",
                                          f"module.init_checkpoint={init_checkpoint}", *overrides])
    return build_module(cfg)


def test_official_hrformer_cls_checkpoint_loads_strictly_and_computes_the_official_features(
        load_reference, converter, tmp_path):
    ref = load_reference("ref_hrformer_t_pose.pt")  # official names; stage 4 multi-scale like the cls model
    head = HRClassificationHead((18, 36, 72, 144), num_classes=1000, depthwise=True)
    head_sd = {k: random_like(k, v) for k, v in head.state_dict().items()}
    assert len(head_sd) == 147  # the official cls head's entries (../shared/docs/hrformer-facts.md)
    official = {"model": {**ref["state_dict"], **head_sd}, "optimizer": {}, "lr_scheduler": {}, "max_accuracy": 78.5,
                "epoch": 299, "config": "hrt_tiny"}
    src, dst = tmp_path / "hrt_tiny.pth", tmp_path / "hrformer_t_cls.pth"
    torch.save(official, src)
    meta = converter.convert(src, dst, "hrformer_t", None)
    assert meta["backbone_options"] == {"multiscale_output": True} and len(meta["head_keys"]) == 147

    converted = torch.load(dst, weights_only=True)["state_dict"]
    # the reference outputs were computed with the pose code's bilinear fusion; cls checkpoints use nearest
    module = cls_module("hrformer_t", dst, "backbone.fuse_upsample=bilinear").eval()
    module.load_state_dict(converted, strict=True)  # every key of the module, nothing else
    for key, value in head_sd.items():
        assert torch.equal(module.head.state_dict()[key], value)
    module.load_state_dict(as_float32(converted), strict=True)
    with torch.no_grad():
        features = module.backbone(ref["input"])
        logits = module(ref["input"])
    for ours, expected in zip(features, ref["outputs_with_rpe"], strict=True):  # the cls attention adds the bias
        assert max_rel_err(ours, expected) < 1e-4
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def official_hrnet_cls_state_dict(name: str) -> dict:
    """Random weights of HRNet ``name`` + its classification head under the official names."""
    backbone = build_backbone(name)
    head = HRClassificationHead(backbone.out_channels, 1000)
    official = {}
    for key, value in backbone.state_dict().items():
        for pattern, repl in TO_OFFICIAL:
            key = re.sub(pattern, repl, key)
        official[key] = random_like(key, value)
    official.update({k: random_like(k, v) for k, v in head.state_dict().items()})
    return official


def test_official_hrnet_cls_key_names():
    with torch.device("meta"):
        official = official_hrnet_cls_state_dict("hrnet_w32")
    assert len(official) == 1956  # HRNet-W32 cls state dict entries (../shared/docs/hrnet-family-facts.md)
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "transition3.3.0.0.weight",
            "stage4.2.fuse_layers.3.0.0.0.weight", "final_layer.0.weight", "final_layer.1.running_var",
            "incre_modules.3.0.downsample.1.weight", "downsamp_modules.2.0.bias", "classifier.bias"} <= set(official)


def test_official_hrnet_cls_checkpoint_loads_strictly(converter, tmp_path):
    torch.manual_seed(0)
    official = official_hrnet_cls_state_dict("hrnet_w18_small_v1")
    src, dst = tmp_path / "hrnet_w18_small_model_v1.pth", tmp_path / "converted.pth"
    torch.save({f"module.{k}": v for k, v in official.items()}, src)  # DataParallel-saved, as the official files
    converter.convert(src, dst, "hrnet_w18_small_v1", None)
    module = cls_module("hrnet_w18_small_v1", dst)
    module.load_state_dict(torch.load(dst, weights_only=True)["state_dict"], strict=True)
    assert torch.equal(module.head.classifier.weight, official["classifier.weight"])
    assert torch.equal(module.backbone.stem.conv1.weight, official["conv1.weight"])
    assert torch.equal(module.backbone.stages[-1][0].fuse_layers[3][0][0][0].weight,
                      official["stage4.0.fuse_layers.3.0.0.0.weight"])

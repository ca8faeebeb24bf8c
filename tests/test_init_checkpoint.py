"""module.init_checkpoint: an official ImageNet checkpoint (official key names, deterministic weights, the official
container) starts every pose and segmentation paper row, which then trains a step; files that do not fit are errors
naming the file (module.init_strict=false: a warning with the counts)."""

from __future__ import annotations

import logging
from functools import cache

import pytest
import torch
from hydra import compose, initialize_config_dir

from hrformer.models.convert import resize_bias_table
from hrformer.models.deterministic import deterministic_tensor
from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import build_module
from tests.conftest import REPO_ROOT
from tests.official_formats import official_weights, reference, save_official

CONF = CONFIG_DIR
# Lite-HRNet's published models train from scratch (no ImageNet weights): not in this list
ROWS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")
              if p.stem.startswith(("pose_coco_", "seg_")) and "litehrnet" not in p.stem and p.stem != "seg_synthetic")
# backbone -> (reference with its official ImageNet keys, the container its code base saves)
IMAGENET = {"hrformer_t": ("hrformer_t_cls", "swin-cls"), "hrformer_s": ("hrformer_s_cls", "swin-cls"),
            "hrformer_b": ("hrformer_b_cls", "swin-cls"), "hrnet_w32": ("hrnet_w32_cls", "plain"),
            "hrnet_w48": ("hrnet_w48_cls", "hrnet-cls-tar"), "uniformer_s": ("uniformer_s_cls", "swin-cls"),
            "uniformer_b": ("uniformer_b_cls", "swin-cls")}
# the official name of one deep backbone tensor and ours, per family
DEEP_KEY = {"hrformer": ("stage4.0.branches.3.1.attn.attn.relative_position_bias_table",
                         "stages.2.0.branches.3.1.attn.relative_position_bias_table"),
            "hrnet": ("stage4.2.fuse_layers.0.3.0.weight", "stages.2.2.fuse_layers.0.3.0.weight"),
            "uniformer": ("blocks3.7.attn.qkv.weight", "blocks3.7.attn.qkv.weight")}
FAST = {("hrformer_t", "HeatmapHead"), ("hrnet_w32", "HeatmapHead"), ("uniformer_s", "DeconvHeatmapHead"),
        ("hrformer_s", "OCRHead")}


def compose_row(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", f"paths.root_dir={REPO_ROOT}",
                                           "paths.output_dir=/tmp/unused", *overrides])


def group_of(cfg) -> tuple:
    """Rows with the same backbone, head and window build the same model."""
    return cfg.backbone.name, cfg.task.head._target_.rsplit(".", 1)[-1], cfg.backbone.get("window_size")


@cache
def groups() -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {}
    for row in ROWS:
        out.setdefault(group_of(compose_row(row)), []).append(row)
    return out


def imagenet_file(tmp_path, backbone: str):
    name, container = IMAGENET[backbone]
    official = official_weights(reference(name))
    return save_official(tmp_path / f"{backbone}_imagenet.pth", official, container), official


def test_every_row_is_in_a_tested_group():
    assert len(ROWS) >= 25
    assert sum(len(rows) for rows in groups().values()) == len(ROWS)
    assert {g[0] for g in groups()} <= set(IMAGENET)


def group_params():
    # composing every row here would slow collection: the groups are listed, test_every_row_is_in_a_tested_group
    # checks them against the rows
    listed = [("hrformer_t", "HeatmapHead", 7), ("hrformer_s", "HeatmapHead", 7), ("hrformer_b", "HeatmapHead", 7),
              ("hrnet_w32", "HeatmapHead", None), ("hrnet_w48", "HeatmapHead", None),
              ("uniformer_s", "DeconvHeatmapHead", None), ("uniformer_b", "DeconvHeatmapHead", None),
              ("hrformer_s", "OCRHead", 7), ("hrformer_b", "OCRHead", 7), ("hrformer_b", "OCRHead", 13),
              ("hrformer_b", "OCRHead", 15), ("hrnet_w48", "UpsampleConcatHead", None)]
    return [pytest.param(g, id="-".join(map(str, g)), marks=() if g[:2] in FAST else pytest.mark.slow)
            for g in listed]


def test_group_list_is_complete():
    assert {g.values[0] for g in group_params()} == set(groups())


@pytest.mark.parametrize("group", group_params())
def test_imagenet_init_of_every_row_then_one_training_step(group, tmp_path, caplog):
    torch.set_num_threads(1)
    row = groups()[group][0]
    backbone = group[0]
    path, official = imagenet_file(tmp_path, backbone)
    cfg = compose_row(row, f"module.init_checkpoint={path}")
    with caplog.at_level(logging.INFO, logger="hrformer.module"):
        module = build_module(cfg)
    log = caplog.text
    assert f"init from {path}" in log and "skipped" in log
    family = "hrformer" if backbone.startswith("hrformer") else backbone.split("_")[0]
    ours = dict(module.backbone.state_dict())
    off_key, our_key = DEEP_KEY[family]
    expected = official[off_key]
    if our_key.endswith("relative_position_bias_table"):
        expected = resize_bias_table(expected, group[2])
    assert torch.equal(ours[our_key], expected)
    stem, our_stem = (("patch_embed1.proj.weight",) * 2 if family == "uniformer"
                      else ("conv1.weight", "stem.conv1.weight"))
    ours_stem = ours[our_stem]
    assert torch.equal(ours_stem, deterministic_tensor(stem, ours_stem.shape))
    if "Heatmap" in group[1] and family != "uniformer":   # single-output pose: the cls file's stage-4 rows skipped
        assert "fuse_layers (" in log and "head.incre_modules" in log

    module.train()
    x = torch.randn(1, 3, 64, 64)
    out = module(x)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    loss = sum(o.square().mean() for o in outs)
    loss.backward()
    before = ours_stem.clone()
    torch.optim.SGD(module.parameters(), lr=0.1).step()
    assert torch.isfinite(loss) and not torch.equal(module.backbone.state_dict()[our_stem], before)


@pytest.fixture
def hrformer_t_file(tmp_path):
    return imagenet_file(tmp_path, "hrformer_t")


def test_file_that_matches_nothing_names_the_file(tmp_path):
    official = official_weights(reference("uniformer_s_cls"))
    path = save_official(tmp_path / "uniformer_small_in1k.pth", official, "swin-cls")
    cfg = compose_row("pose_coco_hrformer_t_256x192", f"module.init_checkpoint={path}")
    with pytest.raises(ValueError, match="uniformer_small_in1k.pth.*no hrformer_t backbone keys.*patch_embed1"):
        build_module(cfg)


def test_missing_backbone_tensor_is_an_error_naming_the_file(tmp_path, hrformer_t_file):
    _, official = hrformer_t_file
    official = {k: v for k, v in official.items() if not k.startswith("stage3.0.branches.0.0.norm1.")}
    path = save_official(tmp_path / "hrt_tiny_damaged.pth", official, "swin-cls")
    cfg = compose_row("pose_coco_hrformer_t_256x192", f"module.init_checkpoint={path}")
    with pytest.raises(ValueError, match=r"hrt_tiny_damaged.pth does not fit the backbone: 2 backbone tensors "
                                         r"missing \(backbone.stages.1.0.branches \(2\)\)"):
        build_module(cfg)


def test_init_strict_false_warns_with_the_counts(tmp_path, hrformer_t_file, caplog):
    _, official = hrformer_t_file
    official = {k: v for k, v in official.items() if not k.startswith("stage3.0.branches.0.0.norm1.")}
    path = save_official(tmp_path / "hrt_tiny_damaged.pth", official, "swin-cls")
    cfg = compose_row("pose_coco_hrformer_t_256x192", f"module.init_checkpoint={path}", "module.init_strict=false")
    with caplog.at_level(logging.WARNING, logger="hrformer.module"):
        module = build_module(cfg)
    assert "2 backbone tensors missing" in caplog.text and "loading the 1758 tensors that fit" in caplog.text
    assert torch.equal(module.backbone.stem.conv1.weight, official["conv1.weight"])


def test_converted_and_official_files_load_the_same(tmp_path, hrformer_t_file):
    from tests.conftest import load_script
    path, _ = hrformer_t_file
    converted = tmp_path / "converted.pth"
    load_script("convert_checkpoint").main([str(path), str(converted), "--arch", "hrformer_t", "--backbone-only"])
    a = build_module(compose_row("pose_coco_hrformer_t_256x192", f"module.init_checkpoint={path}"))
    b = build_module(compose_row("pose_coco_hrformer_t_256x192", f"module.init_checkpoint={converted}"))
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

"""Official checkpoint containers, prefixes and head keys convert to our names."""

from __future__ import annotations

import pytest
import torch

from hrformer.models import (
    HeatmapHead,
    HRClassificationHead,
    build_backbone,
    convert_official_state_dict,
    split_official_state_dict,
)
from hrformer.models.convert import resize_bias_table

OFFICIAL_HRFORMER_KEYS = {
    "conv1.weight": "stem.conv1.weight",
    "bn2.running_var": "stem.bn2.running_var",
    "layer1.0.downsample.0.weight": "stage1.0.downsample.0.weight",
    "transition1.1.0.0.weight": "transitions.0.1.0.0.weight",
    "stage2.0.branches.0.0.attn.attn.q_proj.weight": "stages.0.0.branches.0.0.attn.q_proj.weight",
    "stage3.2.branches.1.1.attn.attn.relative_position_bias_table":
        "stages.1.2.branches.1.1.attn.relative_position_bias_table",
    "stage2.0.branches.0.0.mlp.dw3x3.bias": "stages.0.0.branches.0.0.ffn.dwconv.bias",
    "stage4.1.branches.3.1.mlp.norm3.running_mean": "stages.2.1.branches.3.1.ffn.bn3.running_mean",
    "stage4.1.fuse_layers.0.3.1.num_batches_tracked": "stages.2.1.fuse_layers.0.3.1.num_batches_tracked",
}


@pytest.fixture(scope="module")
def hrformer_sd(load_reference):
    return load_reference("ref_hrformer_t_pose.pt")["state_dict"]


def test_key_map(hrformer_sd):
    converted = convert_official_state_dict(hrformer_sd, "hrformer_t")
    for official, ours in OFFICIAL_HRFORMER_KEYS.items():
        assert official in hrformer_sd
        assert torch.equal(converted[ours], hrformer_sd[official])
    assert not any(k.endswith("relative_position_index") for k in converted)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}, "meta": {}},
    lambda sd: {"state_dict": {f"module.backbone.{k}": v for k, v in sd.items()}},
    lambda sd: {"model": dict(sd), "optimizer": {}, "epoch": 300},
])
def test_containers_and_prefixes_load_strictly(hrformer_sd, wrap):
    model = build_backbone("hrformer_t")
    model.load_state_dict(convert_official_state_dict(wrap(hrformer_sd), "hrformer_t"), strict=True)


def test_classification_checkpoint_splits_into_backbone_and_head(hrformer_sd):
    """A cls checkpoint ('model' with incre/downsamp/final/classifier keys) loads into backbone + head."""
    head = HRClassificationHead((18, 36, 72, 144), num_classes=1000, depthwise=True)
    official = {"model": {**hrformer_sd, **head.state_dict()}, "epoch": 299}
    backbone_sd, head_sd = split_official_state_dict(official, "hrformer_t")
    build_backbone("hrformer_t").load_state_dict(backbone_sd, strict=True)
    HRClassificationHead((18, 36, 72, 144), depthwise=True).load_state_dict(head_sd, strict=True)


def test_hrnet_pose_checkpoint_head(load_reference):
    sd = load_reference("ref_hrnet_w32_pose.pt")["state_dict"]
    _, head_sd = split_official_state_dict(sd, "hrnet_w32")
    assert set(head_sd) == {"final_layer.weight", "final_layer.bias"}
    HeatmapHead(32).load_state_dict(head_sd, strict=True)


def test_window_size_change_resizes_bias_tables(hrformer_sd):
    converted = convert_official_state_dict(hrformer_sd, "hrformer_t", window_size=15)
    model = build_backbone("hrformer_t", window_size=15)
    model.load_state_dict(converted, strict=True)
    table = next(v for k, v in converted.items() if k.endswith("relative_position_bias_table"))
    assert table.shape == (29 * 29, 1)


def test_resize_bias_table_keeps_a_constant_table_constant():
    table = torch.full((13 * 13, 2), 0.5)
    torch.testing.assert_close(resize_bias_table(table, 15), torch.full((29 * 29, 2), 0.5))


def test_not_a_checkpoint_is_a_clear_error():
    with pytest.raises(ValueError, match="no state dict"):
        convert_official_state_dict({"epoch": 3, "meta": {"x": 1}}, "hrnet_w32")


def test_wrong_family_checkpoint_is_a_clear_error(hrformer_sd):
    converted = convert_official_state_dict(hrformer_sd, "hrnet_w18")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build_backbone("hrnet_w18").load_state_dict(converted, strict=True)


def test_no_backbone_keys_is_a_clear_error():
    with pytest.raises(ValueError, match="no hrnet_w32 backbone keys"):
        convert_official_state_dict({"classifier.weight": torch.zeros(2, 2)}, "hrnet_w32")

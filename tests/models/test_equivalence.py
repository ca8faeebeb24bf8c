"""Converted official weights reproduce the official models' outputs (../shared/reference)."""

from __future__ import annotations

import pytest
import torch

from hrformer.models import HeatmapHead, build_backbone, convert_official_state_dict, split_official_state_dict
from tests.conftest import as_float32, max_rel_err

TOL = 1e-4


@pytest.fixture(scope="module")
def hrformer_ref(load_reference):
    return load_reference("ref_hrformer_t_pose.pt")


@pytest.mark.parametrize("attn_impl", ["fast", "reference"])
@pytest.mark.parametrize(("rpe", "key"), [(False, "outputs"), (True, "outputs_with_rpe")])
def test_hrformer_t_multiscale_matches_official(hrformer_ref, rpe, key, attn_impl):
    model = build_backbone("hrformer_t", rpe=rpe, fuse_upsample="bilinear", multiscale_output=True,
                           attn_impl=attn_impl).eval()
    model.load_state_dict(as_float32(convert_official_state_dict(hrformer_ref["state_dict"], "hrformer_t")))
    with torch.no_grad():
        outs = model(hrformer_ref["input"])
    assert len(outs) == 4
    for out, ref in zip(outs, hrformer_ref[key], strict=True):
        assert out.shape == ref.shape
        assert max_rel_err(out, ref) < TOL


def test_rpe_changes_the_function(hrformer_ref):
    """The two references differ, so the RPE option is really exercised by the test above."""
    diff = max_rel_err(hrformer_ref["outputs"][0], hrformer_ref["outputs_with_rpe"][0])
    assert diff > 100 * TOL


def test_hrformer_t_official_pose_config_and_head(hrformer_ref):
    """Single-output pose config: checkpoint lacks the 138 stage-4 fuse keys; loads strictly, same outputs."""
    dropped = set(hrformer_ref["keys_not_in_official_pose_config"])
    official = {k: v for k, v in hrformer_ref["state_dict"].items() if k not in dropped}
    backbone_keys = {f"backbone.{k}": v for k, v in official.items()}
    checkpoint = {"state_dict": {**backbone_keys, **hrformer_ref["head_state_dict"]}}
    backbone_sd, head_sd = split_official_state_dict(checkpoint, "hrformer_t")

    model = build_backbone("hrformer_t", rpe=False, fuse_upsample="bilinear", multiscale_output=False).eval()
    model.load_state_dict(as_float32(backbone_sd), strict=True)
    head = HeatmapHead(model.out_channels[0], num_joints=17).eval()
    head.load_state_dict(as_float32(head_sd), strict=True)
    with torch.no_grad():
        feats = model(hrformer_ref["input"])
        heatmaps = head(feats)
    assert len(feats) == 1
    assert max_rel_err(feats[0], hrformer_ref["outputs_official_pose_config"][0]) < TOL
    assert max_rel_err(heatmaps, hrformer_ref["heatmaps"]) < TOL


def test_hrnet_w32_pose_heatmaps_match_official(load_reference):
    ref = load_reference("ref_hrnet_w32_pose.pt")
    backbone_sd, head_sd = split_official_state_dict(ref["state_dict"], "hrnet_w32")
    model = build_backbone("hrnet_w32", multiscale_output=False).eval()
    model.load_state_dict(as_float32(backbone_sd), strict=True)
    head = HeatmapHead(32, num_joints=17).eval()
    head.load_state_dict(as_float32(head_sd), strict=True)
    with torch.no_grad():
        heatmaps = head(model(ref["input"]))
    assert heatmaps.shape == ref["output"].shape
    assert max_rel_err(heatmaps, ref["output"]) < TOL

"""scripts/convert_checkpoint.py on official-format files of every layout: the converted file, built as its recorded
layout says, computes the official outputs (tests/reference/); bad input gets an error naming the file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hrformer.models import build_backbone
from hrformer.models.convert import Layout
from hrformer.models.deterministic import deterministic_tensor
from hrformer.models.task_models import build_from_layout
from tests.conftest import REPO_ROOT, as_float32, load_script, max_rel_err
from tests.official_formats import official_weights, reference, reference_dtype, reference_input, save_official

SCRIPT = REPO_ROOT / "scripts" / "convert_checkpoint.py"


@pytest.fixture(scope="module")
def script():
    return load_script("convert_checkpoint")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def with_lite_head(sd: dict) -> dict:
    """An mmpose Lite-HRNet file: backbone.* + the 1x1 keypoint head."""
    head = {f"keypoint_head.final_layer.{k}": deterministic_tensor(f"keypoint_head.final_layer.{k}", s)
            for k, s in (("weight", (17, 40, 1, 1)), ("bias", (17,)))}
    return {**{f"backbone.{k}": v for k, v in sd.items()}, **head}


# reference, container, expected (code base, task, head), file-name
CASES = [
    ("hrnet_w18_cls", "hrnet-cls-tar", ("HRNet-Image-Classification", "cls", "hr-cls"), "checkpoint.pth.tar"),
    ("hrnetv2_w18_small_v1_seg_v11", "hrnet-seg", ("HRNet-Semantic-Segmentation (HRNetV2)", "seg", "upsample-concat"),
     "hrnet_w18_small_v1_cityscapes_cls19_1024x2048.pth"),
    ("hrnet_w48_ocr_seg", "hrnet-seg", ("HRNet-Semantic-Segmentation (HRNet-OCR)", "seg", "hrnet-ocr"),
     "hrnet_ocr_cs_8162_torch11.pth"),
    ("hrformer_t_cls", "swin-cls", ("HRFormer (cls)", "cls", "hr-cls"), "hrt_tiny.pth"),
    ("hrformer_s_seg_ocr", "openseg", ("HRFormer (seg, OCR)", "seg", "ocr"), "hrt_small_ocr_cityscapes.pth"),
    ("litehrnet_30_pose", "mmcv", ("Lite-HRNet (pose)", "pose", "heatmap-1x1"), "litehrnet_30_coco_256x192.pth"),
    ("uniformer_s_cls", "swin-cls", ("UniFormer (cls)", "cls", "uniformer-cls"), "uniformer_small_in1k.pth"),
    ("uniformer_s_pose", "mmcv", ("UniFormer (pose)", "pose", "deconv-heatmap"), "top_down_256x192_global_small.pth"),
]


@pytest.mark.parametrize(("name", "container", "expected", "filename"), CASES, ids=[c[0] for c in CASES])
def test_official_file_converts_and_computes_the_official_outputs(script, tmp_path, name, container, expected,
                                                                    filename):
    ref = reference(name)
    sd = official_weights(ref)
    if name == "litehrnet_30_pose":
        sd = with_lite_head(sd)
    src = save_official(tmp_path / filename, sd, container)
    dst = tmp_path / "converted.pth"
    assert script.main([str(src), str(dst), "--arch", ref["arch"]]) == 0
    saved = torch.load(dst, weights_only=True)
    meta = saved["hrformer"]
    assert (meta["code_base"], meta["task"], meta["head"]) == expected
    layout = Layout(meta["code_base"], meta["task"], meta["backbone_options"], meta["head"], meta["head_options"])
    model = build_from_layout(meta["arch"], layout, meta["num_classes"]).eval()
    model.load_state_dict(saved["state_dict"], strict=True)
    model.to(reference_dtype(ref))
    with torch.no_grad():
        if name == "litehrnet_30_pose":   # the reference is the backbone's map
            outputs = {"features.0": model.backbone(reference_input(ref))[0].float()}
        else:
            out = model(reference_input(ref))
    if name != "litehrnet_30_pose":
        if isinstance(out, dict):
            size = ref["outputs"]["out"].shape[-2:]
            outputs = {k: F.interpolate(v, size=size, mode="bilinear", align_corners=True) for k, v in out.items()}
        else:
            outputs = {next(iter(ref["outputs"])): out}
    for key, value in ref["outputs"].items():
        assert max_rel_err(outputs[key].float(), value) < 1e-4, key
    if container == "hrnet-seg":
        assert meta["dropped"] == ["loss.criterion.weight"]


def test_hrnet_pose_file_is_the_single_output_layout(script, load_reference, tmp_path):
    """deep-high-resolution-net's pose_hrnet_w32_256x192.pth (plain state dict): single-output last module, nearest
    fusion; the converted model reproduces the official heatmaps (../shared/reference)."""
    ref = load_reference("ref_hrnet_w32_pose.pt")
    src = save_official(tmp_path / "pose_hrnet_w32_256x192.pth", as_float32(ref["state_dict"]), "plain")
    dst = tmp_path / "converted.pth"
    script.main([str(src), str(dst), "--arch", "hrnet_w32"])
    saved = torch.load(dst, weights_only=True)
    meta = saved["hrformer"]
    assert meta["task"] == "pose" and meta["backbone_options"] == {"multiscale_output": False,
                                                                    "fuse_upsample": "nearest"}
    layout = Layout(meta["code_base"], meta["task"], meta["backbone_options"], meta["head"], meta["head_options"])
    model = build_from_layout("hrnet_w32", layout, meta["num_classes"]).eval()
    model.load_state_dict(saved["state_dict"], strict=True)
    with torch.no_grad():
        assert max_rel_err(model(ref["input"]), ref["output"]) < 1e-4


def test_backbone_only_and_window_resize(script, tmp_path):
    ref = reference("hrformer_s_cls")
    src = save_official(tmp_path / "hrt_small.pth", official_weights(ref), "swin-cls")
    dst = tmp_path / "hrformer_s_w15.pth"
    script.main([str(src), str(dst), "--arch", "hrformer_s", "--backbone-only", "--window-size", "15"])
    saved = torch.load(dst, weights_only=True)
    assert saved["hrformer"]["task"] is None and saved["hrformer"]["backbone_options"]["window_size"] == 15
    assert not any(k.startswith("head.") for k in saved["state_dict"])
    build_backbone("hrformer_s", window_size=15).load_state_dict(
        {k[len("backbone."):]: v for k, v in saved["state_dict"].items()}, strict=True)


def test_unknown_layout_names_the_prefixes_found(tmp_path):
    src = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {"encoder.layer1.weight": torch.zeros(2), "fc.weight": torch.zeros(2, 2)}}, src)
    proc = run(src, tmp_path / "out.pth", "--arch", "hrnet_w32")
    assert proc.returncode != 0
    assert "resnet50.pth" in proc.stderr and "encoder (1), fc (1)" in proc.stderr


def test_wrong_arch_is_refused_with_a_clear_message(tmp_path):
    dst = tmp_path / "out.pth"
    proc = run(REPO_ROOT / ".." / "shared" / "reference" / "ref_hrnet_w32_pose.pt", dst, "--arch", "hrnet_w48")
    assert proc.returncode != 0
    assert "does not fit hrnet_w48" in proc.stderr and "with other shapes" in proc.stderr
    assert not dst.exists()


def test_unreadable_source_names_the_file(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    proc = run(bad, tmp_path / "out.pth", "--arch", "hrnet_w32")
    assert proc.returncode != 0 and "broken.pth" in proc.stderr

"""scripts/convert_checkpoint.py: official file in, a checkpoint our modules load strictly out."""

from __future__ import annotations

import subprocess
import sys

import torch

from hrformer.models import HeatmapHead, build_backbone
from tests.conftest import REPO_ROOT, as_float32, max_rel_err

SCRIPT = REPO_ROOT / "scripts" / "convert_checkpoint.py"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_mmpose_style_pose_checkpoint_round_trip(load_reference, tmp_path):
    ref = load_reference("ref_hrformer_t_pose.pt")
    dropped = set(ref["keys_not_in_official_pose_config"])
    src = tmp_path / "hrformer_t_pose_official.pth"
    backbone = {f"backbone.{k}": v for k, v in ref["state_dict"].items() if k not in dropped}
    torch.save({"meta": {}, "state_dict": {**backbone, **ref["head_state_dict"]}}, src)
    dst = tmp_path / "converted.pth"
    proc = run(src, dst, "--arch", "hrformer_t")
    assert proc.returncode == 0, proc.stderr
    assert "'multiscale_output': False" in proc.stdout

    ckpt = torch.load(dst, weights_only=True)
    sd = as_float32(ckpt["state_dict"])
    backbone = build_backbone("hrformer_t", rpe=False, fuse_upsample="bilinear", multiscale_output=False).eval()
    backbone.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}, strict=True)
    head = HeatmapHead(18).eval()
    head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")}, strict=True)
    with torch.no_grad():
        heatmaps = head(backbone(ref["input"]))
    assert max_rel_err(heatmaps, ref["heatmaps"]) < 1e-4


def test_wrong_arch_is_refused_with_a_clear_message(load_reference, tmp_path):
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

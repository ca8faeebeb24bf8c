"""Mixed precision on CPU: ``precision=bf16-mixed`` trains HRFormer-T pose and HRNet-W18-Small segmentation with
finite losses, and the bf16 forward pass stays within bf16 tolerance of the fp32 one (same weights, same input).

bf16 keeps 8 mantissa bits (a relative rounding step of 2^-8 = 0.4 %); through a few dozen layers the errors add up
to about 1-2 % of the output's range here (measured: HRFormer-T 2.1 %, HRNet-W18-Small 0.7 % of the max, 1.0 % /
0.3 % on average), so the bounds below are 5 % (max) and 2 % (mean).  A layer that silently ran in the wrong
dtype, overflowed or lost its normalisation would be off by far more.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import build_module
from tests.test_seg_train import tiny_overrides
from tests.test_train import SMALL, run

MODELS = {
    "hrformer_t_pose": ["backbone=hrformer_t", "backbone.rpe=false", "backbone.fuse_upsample=bilinear",
                        "backbone.multiscale_output=false"],
    "hrnet_w18_small_seg": ["task=seg", "backbone=hrnet_w18_small_v1", "task/head=upsample_concat",
                            "data=cityscapes_synthetic"],
}


def main_output(out):
    return out["out"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_forward_is_within_bf16_tolerance_of_fp32(name, tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*MODELS[name], f"paths.output_dir={tmp_path}"])
    torch.manual_seed(0)
    model = build_module(cfg).eval()
    images = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        ref = main_output(model(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = main_output(model(images))
    assert low.dtype == torch.bfloat16   # autocast really ran the model in bf16
    err = (low.float() - ref).abs()
    assert err.max() / ref.abs().max() < 5e-2
    assert err.mean() / ref.abs().mean() < 2e-2


def train_losses(run_dir) -> list[float]:
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def check_run(run_dir, key: str) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics[key] is not None and math.isfinite(metrics["val/loss"])
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = [v for v in state["state_dict"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)  # fp32 master weights


def test_bf16_mixed_pose_training_steps_are_finite(tmp_path):
    run_dir = tmp_path / "pose"
    run("hrformer.train", *SMALL, "precision=bf16-mixed", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
        "threads=1", f"hydra.run.dir={run_dir}")
    losses = train_losses(run_dir)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)   # 12 people / batch 4
    check_run(run_dir, "val/AP")


def test_bf16_mixed_segmentation_training_steps_are_finite(tmp_path):
    run_dir = tmp_path / "seg"
    overrides = [o for o in tiny_overrides(tmp_path / "syn") if not o.startswith("trainer.max_epochs")]
    run("hrformer.train", *overrides, "precision=bf16-mixed", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
        f"hydra.run.dir={run_dir}")
    losses = train_losses(run_dir)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)    # 8 images / batch 4
    check_run(run_dir, "val/mIoU")

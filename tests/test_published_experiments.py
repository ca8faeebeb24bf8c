"""Experiment configs of published rows (Lite-HRNet and UniFormer COCO pose) hold the papers' recipes and build the
models they name.  The ImageNet rows (HRFormer and UniFormer) are checked in tests/test_experiments.py."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import build_module
from tests.conftest import REPO_ROOT

CONF = CONFIG_DIR

# experiment: backbone, input (w, h), sigma, lr, images per GPU, optimizer, head, drop path (UniFormer)
POSE = {
    "pose_coco_litehrnet_18_256x192": ("litehrnet_18", (192, 256), 2, 2e-3, 64, "Adam", "HeatmapHead", None),
    "pose_coco_litehrnet_18_384x288": ("litehrnet_18", (288, 384), 3, 2e-3, 32, "Adam", "HeatmapHead", None),
    "pose_coco_litehrnet_30_256x192": ("litehrnet_30", (192, 256), 2, 2e-3, 64, "Adam", "HeatmapHead", None),
    "pose_coco_litehrnet_30_384x288": ("litehrnet_30", (288, 384), 3, 2e-3, 32, "Adam", "HeatmapHead", None),
    "pose_coco_naive_litehrnet_18_256x192": ("naive_litehrnet_18", (192, 256), 2, 2e-3, 64, "Adam", "HeatmapHead",
                                             None),
    "pose_coco_wider_naive_litehrnet_18_256x192": ("wider_naive_litehrnet_18", (192, 256), 2, 2e-3, 64, "Adam",
                                                   "HeatmapHead", None),
    "pose_coco_uniformer_s_256x192": ("uniformer_s", (192, 256), 2, 2e-3, 128, "AdamW", "DeconvHeatmapHead", 0.2),
    "pose_coco_uniformer_s_384x288": ("uniformer_s", (288, 384), 3, 2e-3, 128, "AdamW", "DeconvHeatmapHead", 0.2),
    "pose_coco_uniformer_s_448x320": ("uniformer_s", (320, 448), 3, 1e-3, 64, "AdamW", "DeconvHeatmapHead", 0.2),
    "pose_coco_uniformer_b_256x192": ("uniformer_b", (192, 256), 2, 2e-3, 128, "AdamW", "DeconvHeatmapHead", 0.4),
    "pose_coco_uniformer_b_384x288": ("uniformer_b", (288, 384), 3, 5e-4, 32, "AdamW", "DeconvHeatmapHead", 0.5),
    "pose_coco_uniformer_b_448x320": ("uniformer_b", (320, 448), 3, 5e-4, 32, "AdamW", "DeconvHeatmapHead", 0.55),
}
# the model is built (and run) for one experiment per backbone; the others differ only in recipe values
BUILT = {min(n for n in POSE if POSE[n][0] == backbone) for backbone in {v[0] for v in POSE.values()}}

def test_every_published_experiment_is_checked():
    from tests.test_experiments import IMAGENET_ROWS, ROWS  # the HRFormer paper's rows and ImageNet: checked there

    files = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert {n for n in files if n.startswith(("pose_coco_", "cls_imagenet_"))} - set(ROWS) - set(IMAGENET_ROWS) == set(
        POSE)


@pytest.mark.parametrize("name", sorted(POSE))
def test_pose_experiment_recipe_and_model(name, tmp_path):
    backbone, (w, h), sigma, lr, batch, optimizer, head, drop_path = POSE[name]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", f"paths.output_dir={tmp_path}",
                                          f"paths.root_dir={REPO_ROOT}"])
    assert cfg.backbone.name == backbone and cfg.backbone.multiscale_output is False
    assert list(cfg.task.codec.input_size) == [w, h] and list(cfg.task.codec.heatmap_size) == [w // 4, h // 4]
    assert cfg.task.codec.sigma == sigma and cfg.task.task.flip_test and cfg.task.task.shift_heatmap
    assert cfg.optimizer._target_ == f"torch.optim.{optimizer}" and cfg.optimizer.lr == pytest.approx(lr)
    assert (cfg.data.batch_size, cfg.trainer.devices, cfg.trainer.max_epochs) == (batch, 8, 210)
    assert cfg.data.bbox_source == "det" and cfg.data.root.endswith("coco")
    assert list(cfg.scheduler.milestones) == pytest.approx([170 / 210, 200 / 210], abs=1e-4)
    assert cfg.scheduler.warmup_steps == 500
    if backbone.startswith("uniformer"):
        assert cfg.backbone.drop_path_rate == drop_path and cfg.module.weight_decay == 0.01
        assert (cfg.data.augmentation.rotation_factor, cfg.data.augmentation.scale_factor) == (40, 0.5)
    else:
        assert cfg.backbone.clean_fusion is False and cfg.module.weight_decay == 0
        assert (cfg.data.augmentation.rotation_factor, cfg.data.augmentation.scale_factor) == (30, 0.25)
    if name not in BUILT:
        return
    # UniFormer on the meta device at the experiment's size; Lite-HRNet (quicker to build for real) at 1/4 of it
    meta = backbone.startswith("uniformer")
    with torch.device("meta" if meta else "cpu"):
        module = build_module(cfg).eval()
        size = (h, w) if meta else (h // 4, w // 4)
        with torch.no_grad():
            heatmaps = module(torch.zeros(1, 3, *size))
    assert type(module.head).__name__ == head
    assert heatmaps.shape == (1, 17, size[0] // 4, size[1] // 4)

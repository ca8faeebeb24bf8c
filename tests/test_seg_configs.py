"""The segmentation configs compose with every backbone and data set, and build what they name."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import build_module
from tests.conftest import REPO_ROOT

CONF = CONFIG_DIR
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))
SEG_DATA = {"cityscapes": 19, "ade20k": 150, "pascal_context": 59, "coco_stuff": 171, "cityscapes_synthetic": 8}


def compose_train(overrides: list[str], tmp_path=None):
    paths = [f"paths.output_dir={tmp_path}", f"paths.root_dir={REPO_ROOT}"] if tmp_path else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*overrides, *paths])


def test_every_segmentation_data_config_is_tested():
    assert set(SEG_DATA) <= {p.stem for p in (CONF / "data").glob("*.yaml")}


# backbone and data configs do not interact: every backbone with one data set, every data set with one backbone
PAIRS = sorted({(b, "ade20k") for b in BACKBONES} | {("hrformer_s", d) for d in SEG_DATA})


@pytest.mark.parametrize("backbone,data", PAIRS)
def test_task_seg_composes_with_any_backbone_and_data(backbone, data, tmp_path):
    cfg = compose_train(["task=seg", f"backbone={backbone}", f"data={data}"], tmp_path)
    assert cfg.task.key_metric == "val/mIoU" == cfg.callbacks.model_checkpoint.monitor
    assert cfg.callbacks.model_checkpoint.mode == "max"
    assert cfg.backbone.multiscale_output is True  # segmentation heads take all four branches
    resolved = OmegaConf.to_container(cfg.task, resolve=True)
    assert resolved["head"]["num_classes"] == resolved["task"]["num_classes"] == SEG_DATA[data]
    assert len(resolved["task"]["class_names"]) == SEG_DATA[data]
    assert resolved["task"]["table_file"] == f"{tmp_path}/val_per_class.csv"


@pytest.mark.parametrize("head,inference,classes", [("ocr", "slide", 150), ("upsample_concat", "whole", 150),
                                                     ("semantic_fpn", "whole", 150)])
def test_head_and_inference_options_build(head, inference, classes, tmp_path):
    cfg = compose_train(["task=seg", "backbone=hrnet_w18_small_v1", "data=ade20k",
                         f"task/head={head}", f"task/inference={inference}", "task.head.ocr_mid_channels=32"
                         if head == "ocr" else "task.head.align_corners=true"], tmp_path)
    module = build_module(cfg)
    assert type(module.head).__name__ == {"ocr": "OCRHead", "upsample_concat": "UpsampleConcatHead",
                                          "semantic_fpn": "SemanticFPNHead"}[head]
    assert type(module.task.inference).__name__ == {"slide": "SlidingWindowInference",
                                                    "whole": "WholeInference"}[inference]
    if inference == "slide":
        assert module.task.inference.crop_size == (520, 520) and module.task.inference.stride == (346, 346)
    with torch.no_grad():
        out = module.eval()(torch.randn(1, 3, 64, 64))
    logits = out["out"] if isinstance(out, dict) else out
    assert logits.shape == (1, classes, 16, 16)


def test_seg_synthetic_experiment(tmp_path):
    cfg = compose_train(["experiment=seg_synthetic"], tmp_path)
    assert cfg.backbone.name == "hrnet_w18_small_v1" and cfg.task.head._target_.endswith("UpsampleConcatHead")
    assert cfg.data._target_.endswith("CityscapesDataModule") and cfg.task.key_metric == "val/mIoU"
    dm = instantiate(cfg.data)
    assert dm.num_classes == 8 and dm.lut[0] == 255 and dm.lut[8] == 7
    assert callable(dm.synthetic)


def test_pose_experiment_keys_are_reported_not_silently_used(tmp_path):
    """A pose experiment's augmentation keys on a segmentation datamodule: the datamodule says what to do."""
    cfg = compose_train(["experiment=pose_synthetic", "task=seg", "data=cityscapes"], tmp_path)
    with pytest.raises(InstantiationException, match="rotation_factor.*task=seg data="):
        instantiate(cfg.data)

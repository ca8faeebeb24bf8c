"""Every config in src/hrformer/conf/ composes, and every backbone config builds the registered model it names."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hrformer.models import list_backbones
from hrformer.utils.paths import CONFIG_DIR

CONF = CONFIG_DIR
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))


def test_a_config_per_registered_backbone():
    assert set(BACKBONES) == set(list_backbones())


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_config_builds(name):
    cfg = OmegaConf.load(CONF / "backbone" / f"{name}.yaml")
    model = instantiate(cfg)
    assert len(model.out_channels) == (4 if cfg.multiscale_output else 1)


@pytest.mark.parametrize("overrides", [[], ["experiment=pose_synthetic"], ["backbone=hrnet_w32", "optimizer=adam"],
                                       ["data=coco"], ["trainer=ddp_sim", "logger=wandb", "debug=limit"]])
def test_train_config_composes(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.task.key_metric == "val/AP"
    assert cfg.callbacks.model_checkpoint.monitor == cfg.task.key_metric
    assert cfg.task.codec._target_.endswith("HeatmapCodec")

"""task=cls composes with every backbone: the head of the official classification model, the recipe's settings."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hrformer.models import backbone_family, list_backbones
from hrformer.models.heads import UniFormerClsHead
from hrformer.utils.paths import CONFIG_DIR

CONF = CONFIG_DIR


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("backbone", list_backbones())
def test_cls_composes_with_every_backbone_with_a_classification_model(backbone):
    cfg = _compose(["experiment=cls_imagenet", f"backbone={backbone}"])
    assert cfg.task.key_metric == "val/top1" == cfg.callbacks.model_checkpoint.monitor
    family = backbone_family(backbone)
    with torch.device("meta"):
        net = instantiate(cfg.backbone)
        if family == "litehrnet":   # Lite-HRNet was released for pose only: a clear error, not a made-up head
            with pytest.raises(ValueError, match=f"{backbone}.*no classification head"):
                instantiate(cfg.task.head)(in_channels=net.out_channels)
            return
        head = instantiate(cfg.task.head)(in_channels=net.out_channels)
    # the head of the official classification model of that backbone: depth-wise (HRFormer), plain (HRNet) or
    # UniFormer's norm + pool + linear
    if family == "uniformer":
        assert isinstance(head, UniFormerClsHead) and head.head.out_features == 1000
        return
    depthwise = any(m.groups > 1 for m in head.modules() if isinstance(m, torch.nn.Conv2d))
    assert depthwise == (family == "hrformer")
    assert head.classifier.out_features == cfg.data.num_classes == instantiate(cfg.task.task).num_classes == 1000


def test_imagenet_recipe():
    cfg = _compose(["experiment=cls_imagenet", "backbone=hrformer_s"])
    assert cfg.data.num_classes == 1000 and cfg.data.train_size == cfg.data.val_size == 224
    assert cfg.data.val_crop_ratio == 0.875 and cfg.data.interpolation == "bicubic"
    assert cfg.optimizer.lr == 5e-4 and cfg.module.lr_reference_batch == 512 and cfg.module.weight_decay == 0.05
    assert cfg.module.no_decay_norm_and_bias and cfg.trainer.gradient_clip_val == 5.0
    assert cfg.task.task.label_smoothing == 0.1
    mix = cfg.task.task.mixup
    assert (mix.mixup_alpha, mix.cutmix_alpha, mix.prob, mix.switch_prob) == (0.8, 1.0, 1.0, 0.5)
    assert cfg.scheduler._target_.endswith("warmup_cosine") and cfg.trainer.max_epochs == 300
    assert round(cfg.scheduler.warmup_fraction * 300) == 20
    synthetic = _compose(["experiment=cls_synthetic"])  # the same recipe on the synthetic set
    assert synthetic.task.task.label_smoothing == 0.1 and synthetic.task.task.mixup.switch_prob == 0.5
    assert synthetic.module.weight_decay == 0.05 and synthetic.trainer.gradient_clip_val == 5.0
    assert synthetic.data.num_classes == 8 and synthetic.data.synthetic.seed == 0
    ema = _compose(["experiment=cls_imagenet", "callbacks=ema"]).callbacks
    assert ema.ema._target_.endswith("EMAWeightAveraging") and ema.model_checkpoint.monitor == "val/top1"

"""The one LightningModule: backbone -> head, with loss, decoding and metrics delegated to the task."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

log = logging.getLogger(__name__)

NO_DECAY_SUFFIXES = ("relative_position_bias_table",)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_and_bias: bool = True,
                 no_decay_names: Sequence[str] = NO_DECAY_SUFFIXES) -> list[dict]:
    """Split parameters into decayed and non-decayed groups.

    No weight decay on names ending with one of ``no_decay_names`` (relative position bias tables) and,
    when ``no_decay_norm_and_bias``, on 1-D parameters (norm weights, biases).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(tuple(no_decay_names)) or (no_decay_norm_and_bias and p.ndim <= 1):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class HRLitModule(L.LightningModule):
    """Backbone + head, trained and evaluated through a task object.

    Args:
        backbone: a backbone module (list of multi-resolution features out).
        head: a callable ``head(in_channels=backbone.out_channels)`` returning the head module
            (Hydra ``_partial_: true``), or a module.
        task: e.g. ``PoseTask``, ``ClassificationTask``; provides ``training_loss``, ``validation_step``,
            ``compute_metrics``, ``key_metric`` and optionally ``training_batch`` (a batch transform applied on the
            device before the forward pass, e.g. Mixup/CutMix), ``connect_datamodule`` (called at setup with the
            trainer's datamodule, e.g. for class names) and ``checkpoint_state`` / ``load_checkpoint_state``
            (plain values saved in checkpoints under ``"task_state"``).
        optimizer: partial optimizer (``_partial_: true``), called with parameter groups.
        scheduler: partial ``hrformer.optim`` schedule (called with the optimizer and ``total_steps``) or None.
        weight_decay: decay for the decayed group (the optimizer's own ``weight_decay`` is overridden).
        no_decay_norm_and_bias: exclude 1-D parameters from weight decay.
        init_checkpoint: a converted checkpoint (``scripts/convert_checkpoint.py``) to start from.
        compile: compile backbone and head in place (state-dict keys stay unchanged).
        lr_reference_batch: the optimizer's ``lr`` is meant for this total batch and is scaled linearly to the
            actual one (per-device batch x devices x gradient accumulation), as "5e-4 x batch / 512" in the
            DeiT/Swin recipe; None: used as given.
        channels_last: keep the model's 4-D weights and the input images in the channels-last memory format
            (oneDNN's and cuDNN's native layout; the HRFormer blocks work on (B, H, W, C) anyway): HRFormer-T
            training steps on CPU about 13 % faster in the main job (112x84) and a quarter faster at 256x192
            (docs/benchmarks.md).  Same function, same state-dict keys.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | Callable[..., nn.Module], task: nn.Module,
                 optimizer: Callable[..., torch.optim.Optimizer], scheduler: Callable | None = None,
                 weight_decay: float = 0.0, no_decay_norm_and_bias: bool = True,
                 init_checkpoint: str | None = None, compile: bool = False, lr_reference_batch: int | None = None,
                 channels_last: bool = False):
        super().__init__()
        # plain values only, so that checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["backbone", "head", "task", "optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.backbone = backbone
        self.head = head if isinstance(head, nn.Module) else head(in_channels=backbone.out_channels)
        self.task = task
        if init_checkpoint:
            self.load_converted_checkpoint(init_checkpoint)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()
            self.head.compile()
        self.last_val_outputs: list[dict] = []
        self.last_validated_step = -1   # the global step of the latest validation (not the sanity check)

    def load_converted_checkpoint(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        result = self.load_state_dict({k: v for k, v in state.items() if k.startswith(("backbone.", "head."))},
                                      strict=False)
        log.info("loaded %s: %d missing, %d unexpected keys", path, len(result.missing_keys),
                 len(result.unexpected_keys))
        if result.unexpected_keys:
            raise ValueError(f"{path} has keys this model does not: {result.unexpected_keys[:5]}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images.contiguous(memory_format=self.memory_format)))

    def setup(self, stage: str) -> None:
        connect = getattr(self.task, "connect_datamodule", None)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if connect is not None and datamodule is not None:
            connect(datamodule)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = getattr(self.task, "checkpoint_state", None)
        if state is not None:
            checkpoint["task_state"] = state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load = getattr(self.task, "load_checkpoint_state", None)
        if load is not None and checkpoint.get("task_state") is not None:
            load(checkpoint["task_state"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        transform = getattr(self.task, "training_batch", None)
        if transform is not None:
            batch = transform(batch)
        loss, logs = self.task.training_loss(self(batch["image"]), batch)
        self.log_dict(logs, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.last_val_outputs = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.task.validation_step(self, batch)
        self.log("val/loss", out["loss"], batch_size=batch["image"].shape[0], sync_dist=True)
        if batch_idx == 0:
            self.last_val_outputs.append({"batch": batch, "outputs": out})

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and not self.trainer.sanity_checking:
            self.last_validated_step = self.trainer.global_step
        metrics = self.task.compute_metrics()
        if metrics:  # already reduced over all ranks by the task's metric: the same value on every rank, so the
            # mean that sync_dist takes changes nothing (and Lightning does not warn about unsynced epoch metrics)
            self.log_dict(metrics, prog_bar=False, sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def configure_optimizers(self):
        groups = param_groups(self, self.hparams.weight_decay, self.hparams.no_decay_norm_and_bias)
        optimizer = self.optimizer_factory(groups)
        if self.hparams.get("lr_reference_batch"):
            self.scale_lr(optimizer, self.total_batch_size() / self.hparams.lr_reference_batch)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def total_batch_size(self) -> int:
        """Images per optimizer step: the datamodule's per-device ``batch_size`` x devices x accumulation."""
        per_device = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)
        if per_device is None:
            raise ValueError("module.lr_reference_batch needs a datamodule with a batch_size attribute")
        return int(per_device) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    @staticmethod
    def scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        log.info("learning rate scaled by %.4g to %s for the total batch", factor,
                 sorted({g["lr"] for g in optimizer.param_groups}))

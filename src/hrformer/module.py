"""The one LightningModule: backbone -> head, with loss, decoding and metrics delegated to the task."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from .models.convert import convert_official, resize_bias_table
from .models.registry import backbone_family, family_rules

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
        init_checkpoint: weights to start from: an official checkpoint of any supported code base (converted on
            load, see ``hrformer.models.convert``), a converted one (``scripts/convert_checkpoint.py``) or one of our
            Lightning checkpoints (see :meth:`load_init_checkpoint`).
        init_strict: raise when a backbone tensor of the model is missing from ``init_checkpoint`` or has another
            shape; False: a warning with the counts.
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
                 init_checkpoint: str | None = None, init_strict: bool = True, compile: bool = False,
                 lr_reference_batch: int | None = None, channels_last: bool = False):
        super().__init__()
        # plain values only, so that checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["backbone", "head", "task", "optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.backbone = backbone
        self.head = head if isinstance(head, nn.Module) else head(in_channels=backbone.out_channels)
        self.task = task
        if init_checkpoint:
            self.load_init_checkpoint(init_checkpoint, strict=init_strict)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()
            self.head.compile()
        self.last_val_outputs: list[dict] = []
        self.last_validated_step = -1   # the global step of the latest validation (not the sanity check)

    def load_init_checkpoint(self, path: str, strict: bool = True) -> dict[str, int]:
        """Start from the weights in ``path``; returns the counts (loaded, skipped, missing, ...).

        Every tensor of the model found in the file with the same shape is loaded.  File tensors the model's layout
        lacks (the stage-4 fusion rows of a single-output pose model, a classification head, ...) are skipped and
        logged, summarised by prefix; so are head tensors of another shape (another number of classes).  Relative
        position bias tables of another window size are resized.  A backbone tensor of the model that the file lacks
        or has with another shape raises ``ValueError`` naming the file (``strict=False``: a warning with the
        counts); so does a file from which nothing loads.  When the file has a head for the model (a task checkpoint)
        and its recorded layout differs from the backbone's options, a warning names the options.
        """
        state, layout = read_init_checkpoint(path, self.backbone)
        target = {k: v for k, v in self.state_dict().items() if k.startswith(("backbone.", "head."))}
        loaded, other_shape = {}, []
        for key, value in target.items():
            if key not in state:
                continue
            src = state[key]
            if key.endswith("relative_position_bias_table") and src.shape != value.shape:
                src = resize_bias_table(src, bias_table_window(value))
            if src.shape == value.shape:
                loaded[key] = src
            else:
                other_shape.append(key)
        skipped = sorted(set(state) - set(target))
        fresh = tuple(f"backbone.{p}" for p in absent_keys(self.backbone, layout))
        missing = sorted(k for k in target if k not in state and k.startswith("backbone.") and not k.startswith(fresh))
        wrong = [k for k in other_shape if k.startswith("backbone.")]
        counts = {"loaded": len(loaded), "skipped": len(skipped), "missing": len(missing), "other_shape": len(wrong),
                  "head_loaded": sum(k.startswith("head.") for k in loaded),
                  "head_other_shape": len(other_shape) - len(wrong)}
        if not loaded:
            raise ValueError(f"{path}: no tensor of the file fits this model (file keys: {summarise(state)}; model "
                             f"keys: {summarise(target)}); is it the right checkpoint for {self.backbone.arch}?")
        if missing or wrong:
            message = (f"{path} does not fit the backbone: {len(missing)} backbone tensors missing "
                       f"({summarise(missing)}), {len(wrong)} with other shapes ({summarise(wrong)})")
            if strict:
                raise ValueError(message + "; module.init_strict=false loads the rest")
            log.warning("%s; loading the %d tensors that fit", message, len(loaded))
        self.load_state_dict(loaded, strict=False)
        log.info("init from %s: loaded %d tensors (%d of the head); skipped %d the model lacks%s%s", path, len(loaded),
                 counts["head_loaded"], len(skipped), f" ({summarise(skipped)})" if skipped else "",
                 f"; {counts['head_other_shape']} head tensors of another shape kept fresh "
                 f"({summarise(other_shape)})" if counts["head_other_shape"] else "")
        if layout and counts["head_loaded"]:
            options = getattr(self.backbone, "options", {})
            differ = {k: (v, options[k]) for k, v in layout.get("backbone_options", {}).items()
                      if k in options and options[k] != v}
            if differ:
                log.warning("%s was trained with the backbone options %s; this model has %s: its outputs will "
                            "differ from the checkpoint's", path, {k: v[0] for k, v in differ.items()},
                            {k: v[1] for k, v in differ.items()})
        return counts

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


def bias_table_window(table: torch.Tensor) -> int:
    """The window size K of a ((2K-1)^2, heads) relative position bias table."""
    return (round(table.shape[0] ** 0.5) + 1) // 2


def absent_keys(backbone: nn.Module, layout: dict | None) -> tuple[str, ...]:
    """Prefixes of the backbone's keys that a checkpoint of ``layout`` cannot have (see ``CheckpointRules``)."""
    arch = getattr(backbone, "arch", None)
    if not layout or arch is None:
        return ()
    return family_rules(backbone_family(arch)).absent_from(layout.get("backbone_options", {}))


def read_init_checkpoint(path: str, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``(state dict in our names (backbone.*, head.*), recorded layout or None)`` of any file ``init_checkpoint``
    accepts: a converted file (``{"state_dict", "hrformer": metadata}``), a Lightning checkpoint of ours, or an
    official checkpoint, converted here for ``backbone.arch`` (and its window size)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"init checkpoint not found: {path}") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ValueError(f"cannot read {path} as a torch checkpoint: {err}") from None
    if isinstance(raw, Mapping) and ("hrformer" in raw or "pytorch-lightning_version" in raw):
        return dict(raw["state_dict"]), raw.get("hrformer")
    arch = getattr(backbone, "arch", None)
    if arch is None:
        raise ValueError(f"{path} is an official checkpoint, but the backbone was not built by build_backbone, so "
                         "its architecture is unknown; convert the file with scripts/convert_checkpoint.py")
    try:
        converted = convert_official(raw, arch, window_size=backbone.options.get("window_size"))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None
    return converted.state_dict(), converted.layout.as_dict()


def summarise(keys) -> str:
    """``'backbone.stages.2.1.fuse_layers (138), head.incre_modules (4)'``: keys counted by their module prefix (the
    path up to the first named module after an index; two parts for head keys)."""
    groups: Counter = Counter()
    for key in keys:
        parts = key.split(".")[:-1]
        cut = 2
        if parts and parts[0] != "head":
            for i in range(1, len(parts)):
                if not parts[i].isdigit() and parts[i - 1].isdigit():
                    cut = i + 1
                    break
            else:
                cut = len(parts)
        groups[".".join(parts[:cut])] += 1
    items = sorted(groups.items())
    text = ", ".join(f"{p} ({n})" for p, n in items[:12])
    return text + (f", ... ({len(items) - 12} more groups)" if len(items) > 12 else "") if items else "none"

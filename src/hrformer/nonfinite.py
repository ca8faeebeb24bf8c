"""Never train on a NaN: a non-finite training loss stops the run with an error naming the step and the batch's
images, or (``on_nonfinite_loss=skip``) that optimizer step is skipped, named in a warning and counted."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)

MODES = ("raise", "skip")
SAMPLE_ID_KEYS = ("image_id", "path", "name")   # how the tasks' batches name their samples (pose, cls, seg)


class NonFiniteLossError(FloatingPointError):
    """A training loss that is NaN or infinite."""


def batch_sample_ids(batch: Any, limit: int = 32) -> list:
    """The image ids (or file names) of a training batch, as far as it carries them."""
    if not isinstance(batch, dict):
        return []
    for key in SAMPLE_ID_KEYS:
        if key in batch:
            ids = batch[key]
            ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
            return ids[:limit]
    return []


class NonFiniteLossGuard(L.Callback):
    """Checks every training loss before its backward pass (all ranks agree, so that DDP never waits on a rank).

    ``mode="raise"``: :class:`NonFiniteLossError` naming the step, epoch, batch index and the batch's image ids.
    ``mode="skip"``: that batch leaves no trace: the optimizer step is skipped (its gradients are dropped, so the
    optimizer leaves the weights and its moments alone) and the buffers its forward pass changed (batch-norm
    statistics, which a NaN input would poison) are put back; each one is named in a warning and counted in
    ``train/nonfinite_skipped`` per epoch.
    """

    def __init__(self, mode: str = "raise"):
        if mode not in MODES:
            raise ValueError(f"on_nonfinite_loss must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.skipped = 0
        self._batch: Any = None
        self._batch_idx = -1
        self._skip_step = False
        self._buffers: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.skipped = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch, self._batch_idx = batch, batch_idx
        if self.mode == "skip":
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        agreed = trainer.strategy.reduce_boolean_decision(finite, all=True) if trainer.world_size > 1 else finite
        if agreed:
            return
        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx} of the epoch)"
        if finite:
            what = f"non-finite training loss on another rank {where}"
        else:
            what = (f"non-finite training loss {loss.detach().float().item()} {where}, images "
                    f"{batch_sample_ids(self._batch)}")
        if trainer.world_size > 1:
            what += f" (rank {trainer.global_rank})"
        if self.mode == "raise":
            raise NonFiniteLossError(f"{what}; training stopped (on_nonfinite_loss=skip skips such steps)")
        self.skipped += 1
        self._skip_step = True
        log.warning("%s: optimizer step skipped (%d this epoch)", what, self.skipped)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self._skip_step:
            optimizer.zero_grad(set_to_none=True)   # an optimizer steps no parameter that has no gradient
            with torch.no_grad():
                for buffer, saved in zip(pl_module.buffers(), self._buffers, strict=True):
                    buffer.copy_(saved)
            self._skip_step = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mode == "skip":
            pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=False, on_epoch=True)

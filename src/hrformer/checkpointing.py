"""The checkpoint a stopped run resumes from: ``<run dir>/checkpoints/last.ckpt``, kept current during training."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)


class ResumeCheckpoint(Checkpoint):
    """Writes ``dirpath/filename.ckpt`` at the end of every training epoch, every ``every_n_train_steps`` optimizer
    steps and every ``every_n_minutes`` minutes, so that a killed run loses at most the steps since the last write.

    A mid-epoch checkpoint resumes exactly where it was written (the datamodule keeps the position in the epoch and
    the random states, :class:`hrformer.data.common.TrainValDataModule`).  Writes are atomic (Lightning writes to a
    temporary file and renames it), so a kill during a write leaves the previous checkpoint.  Under DDP all ranks
    write when the first of their clocks says it is time.  ``hrformer.train resume=RUN_DIR`` resumes from the latest
    checkpoint of the run directory (:func:`hrformer.utils.resume.latest_checkpoint`).

    Args:
        dirpath: the folder (the run directory's ``checkpoints/``).
        filename: the file name without ``.ckpt``.
        every_n_train_steps: also write every this many optimizer steps (None: not by steps).
        every_n_minutes: also write when this many minutes have passed since the last write (None: not by time).
    """

    def __init__(self, dirpath: str | Path, filename: str = "last", every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = None):
        super().__init__()
        for name, value in (("every_n_train_steps", every_n_train_steps), ("every_n_minutes", every_n_minutes)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or null, got {value}")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.every_n_train_steps, self.every_n_minutes = every_n_train_steps, every_n_minutes
        self._last_write = time.monotonic()
        self._last_step = -1

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.path))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_write = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:   # mid-accumulation: the gradients are not saved
            return
        step = trainer.global_step
        due = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0 and step != self._last_step
        if self.every_n_minutes is not None:
            late = time.monotonic() - self._last_write >= 60.0 * self.every_n_minutes
            due = due or (trainer.strategy.reduce_boolean_decision(late, all=False) if trainer.world_size > 1
                          else late)
        if due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: L.Trainer) -> Path:
        """Write the checkpoint now (on every rank, as Lightning's checkpointing requires)."""
        trainer.save_checkpoint(self.path, weights_only=False)
        self._last_write, self._last_step = time.monotonic(), trainer.global_step
        log.debug("resume checkpoint %s at step %d", self.path, trainer.global_step)
        return self.path

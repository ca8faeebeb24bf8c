"""Faults injected into test runs from the command line (``+callbacks.NAME._target_=tests.faults.CLASS``): what a
user's run meets by accident, made to happen at a known step."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch


class HangOnce(L.Callback):
    """Before training on the batch after optimizer step ``step``: write ``marker`` and wait (for the test to kill
    the process).  Only once: a run that finds ``marker`` (the resumed one) trains on."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = int(step), Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(f"{trainer.global_step}\n")
            time.sleep(600)


class SlowSteps(L.Callback):
    """Sleep ``seconds`` before every training batch (so that a test can send a signal during training); writes
    ``marker`` at the first one."""

    def __init__(self, seconds: float, marker: str):
        self.seconds, self.marker = float(seconds), Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if not self.marker.exists():
            self.marker.write_text(f"{trainer.global_step}\n")
        time.sleep(self.seconds)


class NaNTarget(L.Callback):
    """The heatmap targets of the batch trained after optimizer step ``step`` become NaN (a corrupted annotation),
    on rank ``rank`` only (None: every rank), in the Hydra multirun job ``job_num`` only (None: any job)."""

    def __init__(self, step: int, rank: int | None = None, job_num: int | None = None):
        self.step, self.rank, self.job_num = int(step), rank, job_num

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.job_num is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job_num:
                return
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            batch["target"].fill_(torch.nan)

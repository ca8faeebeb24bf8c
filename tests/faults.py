"""Faults injected into test runs from the command line (``+callbacks.NAME._target_=tests.faults.CLASS``): what a
user's run meets by accident, made to happen at a known step."""

from __future__ import annotations

import json
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
    on rank ``rank`` only (None: every rank), in the Hydra multirun job ``job_num`` only (None: any job).

    ``record``: a folder to write what happened to: ``ids.json`` (the batch's image ids) and the weights before and
    after that step (``before.pt``, ``after.pt``)."""

    def __init__(self, step: int, rank: int | None = None, job_num: int | None = None, record: str | None = None):
        self.step, self.rank, self.job_num = int(step), rank, job_num
        self.record = Path(record) if record else None
        self._active = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.job_num is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job_num:
                return
        self._active = trainer.global_step == self.step and self.rank in (None, trainer.global_rank)
        if not self._active:
            return
        batch["target"].fill_(torch.nan)
        if self.record is not None:
            self.record.mkdir(parents=True, exist_ok=True)
            (self.record / "ids.json").write_text(json.dumps(batch["image_id"].tolist()))
            torch.save({k: v.clone() for k, v in pl_module.state_dict().items()}, self.record / "before.pt")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if self._active and self.record is not None:
            torch.save(pl_module.state_dict(), self.record / "after.pt")

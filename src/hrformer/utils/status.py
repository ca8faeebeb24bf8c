"""``RUN_DIR/status.json``: where a run stands or where it stopped, written by rank zero.

``{"state": "running" | "finished" | "failed" | "stopped" | "requeued", "step", "epoch", "error", "time",
"slurm_job_id"}``: ``running`` from the start (a run killed with SIGKILL keeps it, with the step of its last
update), ``failed`` with the error and the step and epoch it happened at, ``stopped`` for a keyboard interrupt or
SIGTERM, ``requeued`` when a scheduler's signal made it checkpoint and requeue itself (the next launch in the same
run directory resumes, :mod:`hrformer.utils.resume`), ``finished`` after the final metrics were written.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

STATUS_FILE = "status.json"
MAX_ERROR_CHARS = 4000


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_status(run_dir: str | Path, state: str, step: int | None = None, epoch: int | None = None,
                 error: BaseException | str | None = None) -> None:
    """Replace ``run_dir/status.json`` atomically (rank zero only; other ranks return)."""
    if rank_zero_only.rank != 0:
        return
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    if error and len(error) > MAX_ERROR_CHARS:   # keep the end too: a spawned rank's error is the last line
        error = f"{error[:MAX_ERROR_CHARS // 4]} [...] {error[-(MAX_ERROR_CHARS * 3 // 4):]}"
    record = {"state": state, "step": step, "epoch": epoch, "error": error,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    path = Path(run_dir) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


class RunStatus(L.Callback):
    """Keeps ``status.json`` of ``run_dir`` current during ``fit``: ``running`` with the step at every epoch end,
    ``failed``/``stopped`` with the step, epoch and error when training raises (a requeue it leaves alone)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_status(self.run_dir, "running", trainer.global_step, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_status(self.run_dir, "running", trainer.global_step, trainer.current_epoch)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if (read_status(self.run_dir) or {}).get("state") == "requeued":
            return
        state = "stopped" if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else "failed"
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            # the main process of a spawning strategy (its ranks call no exception hooks): it did not train itself
            write_status(self.run_dir, state, error=exception)
        else:
            write_status(self.run_dir, state, trainer.global_step, trainer.current_epoch, exception)

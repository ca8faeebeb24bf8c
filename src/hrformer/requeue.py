"""Runs that survive SLURM's time limit and preemption: checkpoint, requeue, resume in the same run directory.

Under a SLURM job the scheduler sends a signal some time before it stops the job: ``#SBATCH --signal=USR1@300``
with plain ``sbatch`` + ``srun``, ``USR2`` ``signal_delay_s`` seconds before with the submitit launcher
(``hydra/launcher=slurm``).  :class:`Requeue` catches SIGUSR1 and SIGUSR2 during training; at the next optimizer
step boundary (every rank agrees) it writes the resume checkpoint (``checkpoints/last.ckpt``), sets
``status.json`` to ``requeued`` and requeues the job:

- under submitit, by handing the signal on to submitit's own handler, which requeues the job with the same
  arguments, counts timeouts against ``max_num_timeout`` and exits;
- otherwise with ``scontrol requeue <job id>`` (rank zero), as Lightning's SLURM auto-requeue does (whose handler
  this one replaces: Lightning's writes its checkpoint from inside the signal handler, possibly in the middle of a
  step), and the run stops.

The requeued job starts the same command again.  Its run directory is the same (``hydra.run.dir`` is named after
the job id under SLURM, :func:`hrformer.utils.slurm.run_dir_name`; submitit replays the job's own configuration), and
:func:`hrformer.utils.resume.checkpoint_to_resume` resumes from that checkpoint because of the ``requeued``
status.  A signal that arrives while validating takes effect at the first training step after it, so the signal's
lead time should exceed a validation's duration.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L

from .checkpointing import ResumeCheckpoint
from .utils.slurm import in_batch_job, scontrol_requeue, slurm_job_id
from .utils.status import write_status

log = logging.getLogger(__name__)

SIGNALS = ("SIGUSR1", "SIGUSR2")


class Requeued(Exception):
    """Raised on every rank to end ``fit`` after the resume checkpoint was written and the job requeued."""


def save_resume_checkpoint(trainer: L.Trainer) -> Path:
    """Write the run's resume checkpoint now, through its :class:`ResumeCheckpoint` callback if it has one."""
    for callback in trainer.callbacks:
        if isinstance(callback, ResumeCheckpoint):
            return callback.save(trainer)
    path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    return path


class Requeue(L.Callback):
    """Checkpoint and requeue on the scheduler's signal (see the module docstring); inactive outside a SLURM batch
    job unless ``always`` (tests)."""

    def __init__(self, run_dir: str | Path, signals: tuple[str, ...] = SIGNALS, always: bool = False):
        self.run_dir = Path(run_dir)
        self.signals = [getattr(signal, name) for name in signals]
        self.always = always
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    @property
    def active(self) -> bool:
        return bool(self.previous)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not (self.always or in_batch_job()) or threading.current_thread() is not \
                threading.main_thread():
            return
        self.received = None
        for signum in self.signals:
            self.previous[signum] = signal.signal(signum, self._on_signal)
        log.info("SLURM job %s: on %s, checkpoint and requeue", slurm_job_id(),
                 "/".join(signal.Signals(s).name for s in self.signals))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self.previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")

    def _on_signal(self, signum: int, frame: Any) -> None:
        # only a flag: the checkpoint is written between two steps, where the state is whole
        log.warning("received %s: the run checkpoints and requeues after this step", signal.Signals(signum).name)
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.active:
            return
        requested = self.received is not None
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested and not (batch_idx + 1) % trainer.accumulate_grad_batches:
            self._checkpoint_and_requeue(trainer)

    def _checkpoint_and_requeue(self, trainer: L.Trainer) -> None:
        path = save_resume_checkpoint(trainer)
        write_status(self.run_dir, "requeued", trainer.global_step, trainer.current_epoch)
        log.warning("checkpoint %s written at step %d", path, trainer.global_step)
        signum = self.received if self.received is not None else self.signals[0]
        handler = self.previous.get(signum)
        if callable(handler):   # the launcher's own (submitit): it requeues, counting timeouts, and exits
            handler(signum, None)
        elif trainer.is_global_zero:
            job_id = slurm_job_id()
            if job_id is None or not scontrol_requeue(job_id):
                write_status(self.run_dir, "stopped", trainer.global_step, trainer.current_epoch,
                             f"{signal.Signals(signum).name} received; checkpoint written, job not requeued")
        raise Requeued(f"checkpointed at step {trainer.global_step} and requeued")

"""The SLURM job a process runs in: its id, whether it is a batch job, the run directory named after it, and
``scontrol requeue`` (the checkpoint-and-requeue callback is :mod:`hrformer.requeue`)."""

from __future__ import annotations

import logging
import os
import re
import subprocess

log = logging.getLogger(__name__)

INTERACTIVE_JOB_NAMES = ("bash", "interactive")   # as Lightning's SLURMEnvironment: a shell, not a batch job


def slurm_job_id() -> str | None:
    """``ARRAYJOB_TASK`` for an array task, else ``$SLURM_JOB_ID`` (None outside SLURM)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def in_batch_job() -> bool:
    """Whether this process is a task of a SLURM batch job (not an interactive shell allocation)."""
    return slurm_job_id() is not None and os.environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES


def run_dir_name(default: str) -> str:
    """``slurm-<job id>`` (``.<step>`` within a job step of ``srun``) in a SLURM batch job, where every task and
    every requeued start of the job must find the same run directory; else ``default`` (the start time)."""
    if not in_batch_job():
        return default
    step = os.environ.get("SLURM_STEP_ID", "")
    suffix = f".{step}" if step.isdigit() and int(step) < 0xFFFFFFF0 and step != "0" else ""
    return f"slurm-{slurm_job_id()}{suffix}"


def scontrol_requeue(job_id: str) -> bool:
    if not re.fullmatch(r"[0-9_]+", job_id):
        log.warning("not requeueing: %r is not a SLURM job id", job_id)
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        log.error("scontrol requeue %s failed: %s", job_id, err)
        return False
    if result.returncode:
        log.error("scontrol requeue %s failed (exit code %d): %s", job_id, result.returncode, result.stderr.strip())
        return False
    log.info("requeued SLURM job %s", job_id)
    return True

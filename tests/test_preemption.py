"""SLURM preemption and time limits, simulated on CPU: SLURM's environment variables, a stub ``scontrol`` on PATH
that records its arguments, the scheduler's signal sent to a running training.  The run writes its resume
checkpoint, requeues the job, and the next start of the same job (same environment, same command) resumes from
that checkpoint in the same run directory: with plain ``sbatch`` + ``srun`` (SIGUSR1, ``scontrol requeue``) and
under submitit (SIGUSR2 handed on to submitit's own handler, which pickles the job's resubmission, requeues and
exits)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from hrformer.utils.paths import CONFIG_DIR
from tests.conftest import REPO_ROOT
from tests.test_train import SMALL

ARGS = [*SMALL, "trainer.max_epochs=2", "threads=1", "results_file=null", "callbacks.prediction_pictures=null",
        "+callbacks.slow._target_=tests.faults.SlowSteps", "+callbacks.slow.seconds=0.3"]
RUN_NAME = "pose_coco_synthetic_hrformer_t"   # the task_name of SMALL's composition


def slurm_env(tmp_path: Path, job_id: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "scontrol"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    stub.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1",
            "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "pose", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
            "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
            "SLURM_STEP_ID": "0"}


def signal_when_training(cmd: list[str], env: dict, log: Path, marker: Path, signum: int) -> int:
    """Start ``cmd``, send ``signum`` once its first training batch started, return its exit code."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signum)
    return proc.wait(timeout=300)


def check_requeued_then_resumed(tmp_path: Path, job_id: str, run_dir: Path, second: subprocess.CompletedProcess):
    assert (tmp_path / "scontrol.log").read_text().splitlines() == [f"requeue {job_id}"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert f"resuming {run_dir} from {ckpt} (step 1) after a requeue" in second.stdout + second.stderr
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6   # 2 epochs x 3 steps, none done twice
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / "metrics.json").is_file()


def test_sbatch_srun_usr1_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path):
    env = slurm_env(tmp_path, "4242")
    cmd = [sys.executable, "-m", "hrformer.train", *ARGS, f"+callbacks.slow.marker={tmp_path / 'started'}",
           f"paths.log_dir={tmp_path / 'outputs'}"]
    code = signal_when_training(cmd, env, tmp_path / "first.log", tmp_path / "started", signal.SIGUSR1)
    assert code == 0, (tmp_path / "first.log").read_text()[-3000:]
    run_dir = tmp_path / "outputs" / RUN_NAME / "runs" / "slurm-4242"   # named after the job: found again
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["step"], status["slurm_job_id"]) == ("requeued", 1, "4242")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (state["global_step"], state["epoch"]) == (1, 0)   # written at the step boundary after the signal
    second = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    check_requeued_then_resumed(tmp_path, "4242", run_dir, second)


def test_submitit_gets_the_signal_after_the_checkpoint_and_its_resubmission_resumes(tmp_path):
    pytest.importorskip("submitit")
    from submitit.core.utils import DelayedSubmission, JobPaths

    from tests.submitit_job import TrainJob

    env = {**slurm_env(tmp_path, "4343"), "SUBMITIT_EXECUTOR": "slurm"}
    folder = tmp_path / "submitit"
    job = DelayedSubmission(TrainJob([*ARGS, f"+callbacks.slow.marker={tmp_path / 'started'}",
                                      f"paths.log_dir={tmp_path / 'outputs'}"]))
    job.set_timeout(60, 3)
    pickle = JobPaths(folder, job_id="4343").submitted_pickle
    pickle.parent.mkdir(parents=True)
    job.dump(pickle)
    cmd = [sys.executable, "-m", "submitit.core._submit", str(folder)]
    code = signal_when_training(cmd, env, tmp_path / "first.log", tmp_path / "started", signal.SIGUSR2)
    log = (tmp_path / "first.log").read_text()
    assert code == 255 and "Exiting gracefully after preemption/timeout" in log, log[-3000:]   # submitit's exit
    run_dir = tmp_path / "outputs" / RUN_NAME / "runs" / "slurm-4343"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "requeued"
    resubmitted = DelayedSubmission.load(pickle)   # what submitit pickled for the requeued job
    assert resubmitted._timeout_countdown == 3   # a preemption, not a timeout: the budget is untouched
    second = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    check_requeued_then_resumed(tmp_path, "4343", run_dir, second)


def test_the_slurm_launcher_keeps_submitits_signal_and_timeout_budget():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra [slurm] not installed")
    from submitit.slurm.slurm import _make_sbatch_string

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "experiment=pose_coco_hrformer_s_256x192",
                                          "trainer=multinode"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert "signal" not in launcher.additional_parameters and launcher.max_num_timeout > 0
    script = _make_sbatch_string(command="run", folder="/tmp/x", signal_delay_s=launcher.signal_delay_s,
                                 additional_parameters=dict(launcher.additional_parameters))
    assert f"#SBATCH --signal=USR2@{launcher.signal_delay_s}" in script   # the signal submitit's handler waits for

"""Resume as a user meets it: a run killed with SIGKILL in the middle of an epoch, continued with
``resume=RUN_DIR``, ends exactly where an uninterrupted run with the same seed ends, having redone only the steps
after its last checkpoint.

Tolerance: none.  The metrics and every weight are compared for equality: the training order and each sample's
augmentation are functions of (seed, epoch, sample) (hrformer.data.sampling), a mid-epoch checkpoint keeps the
position in the epoch and every rank's global random state (drop path), and one CPU process computes the same
floating-point operations in the same order.  (Without that, Lightning restarts a mid-epoch run with a new shuffle
and new augmentation draws, which changes the weights from the first resumed step on.)
"""

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

from hrformer.utils.resume import latest_checkpoint, resume_arguments
from tests.conftest import REPO_ROOT
from tests.test_train import SMALL, run

# 12 people / batch 4 = 3 steps per epoch, 3 epochs; last.ckpt every 2 optimizer steps and at every epoch end; drop
# path, so that the model draws random numbers too
RECIPE = [*SMALL, "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_train_steps=2", "threads=1",
          "backbone.drop_path_rate=0.2", "results_file=null", "callbacks.prediction_pictures=null"]
KILL_AFTER_STEP = 5   # in the second epoch (steps 4-6); the last checkpoint before it is step 4's


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    with open(log, "w") as f:   # a file, not a pipe: the process never blocks on a full pipe
        return subprocess.Popen([sys.executable, "-m", "hrformer.train", *args], cwd=REPO_ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.2)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_a_run_killed_mid_epoch_and_resumed_ends_exactly_as_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    marker = tmp_path / "hanging"
    # the uninterrupted run and the one to kill run side by side (two processes on the two cores)
    ref = start([*RECIPE, f"hydra.run.dir={whole}"], tmp_path / "whole.log")
    victim = start([*RECIPE, f"hydra.run.dir={killed}", "+callbacks.hang._target_=tests.faults.HangOnce",
                    f"+callbacks.hang.step={KILL_AFTER_STEP}", f"+callbacks.hang.marker={marker}"],
                   tmp_path / "killed.log")
    wait_for(marker, victim, tmp_path / "killed.log")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    # what the kill left: the checkpoint of step 4 (mid-epoch: 1 of the epoch's 3 batches), a run still "running"
    ckpt = latest_checkpoint(killed)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert ckpt.name == "last.ckpt" and state["global_step"] == 4 and state["epoch"] == 1
    assert json.loads((killed / "status.json").read_text())["state"] == "running"
    assert not (killed / "metrics.json").exists()

    # resume=RUN_DIR alone: the run's own overrides come back (its fault injection too, which fires once only)
    proc = run("hrformer.train", f"resume={killed}")
    assert f"resuming {killed} from {killed / 'checkpoints' / 'last.ckpt'} (step 4)" in proc.stderr + proc.stdout
    assert ref.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()[-3000:]

    assert json.loads((killed / "status.json").read_text())["state"] == "finished"
    final = json.loads((killed / "metrics.json").read_text())
    assert final == json.loads((whole / "metrics.json").read_text()) and final["val/loss"] > 0
    resumed, uninterrupted = weights(killed / "checkpoints" / "last.ckpt"), weights(whole / "checkpoints" / "last.ckpt")
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
    # the steps trained after the resume: 5 to 9, each logged once (the killed process never logged step 5)
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9


def test_resume_replays_the_runs_own_overrides_and_lets_the_command_line_change_them(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "- experiment=pose_synthetic\n- trainer.max_epochs=3\n- +callbacks.x.y=1\n- hparams_search=optuna\n"
        f"- resume={run_dir}\n- ckpt_path=last\n")
    args = resume_arguments(["--cfg", "job", f"resume={run_dir}", "trainer.max_epochs=5"])
    assert args == ["--cfg", "job", "experiment=pose_synthetic", "+callbacks.x.y=1", "trainer.max_epochs=5",
                    f"hydra.run.dir={run_dir}", f"resume={run_dir}"]
    assert resume_arguments(["trainer.max_epochs=5"]) == ["trainer.max_epochs=5"]
    with pytest.raises(SystemExit, match="not the directory of a hrformer.train run"):
        resume_arguments([f"resume={tmp_path}"])

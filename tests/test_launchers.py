"""The optional launchers: a real two-trial Optuna search (SQLite storage, the pinned sqlalchemy/alembic) and the
SLURM launcher config, whose tasks per node equal the GPUs per node so that Lightning's SLURM environment takes
its ranks from what SLURM sets for each task."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys

import lightning as L
import pytest
import yaml
from hydra import compose, initialize_config_dir

from hrformer.utils.paths import CONFIG_DIR
from tests.conftest import REPO_ROOT
from tests.test_train import SMALL

CONF = CONFIG_DIR


def test_optuna_search_runs_its_trials_and_maximises_the_key_metric_past_a_failed_trial(tmp_path):
    """Three trials; in the third the loss turns NaN (a corrupted target at step 1): that trial fails (its run
    directory says why), counts as the worst value, and the search goes on to its summary."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra [sweep] not installed")
    db = tmp_path / "optuna.db"
    args = [*SMALL, "hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3",
            f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=test_study", "trainer.max_epochs=1",
            "callbacks=none", "logger=none", "threads=1", f"hydra.sweep.dir={tmp_path / 'multirun'}",
            f"results_file={tmp_path / 'results.jsonl'}", "+callbacks.nan._target_=tests.faults.NaNTarget",
            "+callbacks.nan.step=1", "+callbacks.nan.job_num=2"]
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "-m", "hrformer.train", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "multirun").iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    values = [json.loads((job / "metrics.json").read_text())["val/AP"] for job in jobs[:2]]
    failed = json.loads((jobs[2] / "status.json").read_text())
    assert failed["state"] == "failed" and "non-finite training loss nan at step 1" in failed["error"]
    assert not (jobs[2] / "metrics.json").exists()
    # each trial drew its own hyper-parameters from the search space
    sampled = [yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) for job in jobs]
    assert all(any(o.startswith("optimizer.lr=") for o in s) for s in sampled) and sampled[0] != sampled[1]
    # the sweeper's summary: the best of the trials' key metric, which hrformer.train returned
    best = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    # the study persisted in SQLite (the pins of the [sweep] extra): the failed trial ranks last (-inf)
    with sqlite3.connect(db) as con:
        stored = [row[0] for row in con.execute(
            "SELECT v.value FROM trial_values v JOIN trials t ON v.trial_id = t.trial_id "
            "WHERE t.state = 'COMPLETE' ORDER BY t.number")]
    assert stored == pytest.approx([*values, -math.inf])


def test_slurm_launcher_gives_one_task_per_gpu_and_lightning_reads_the_ranks(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra [slurm] not installed")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "experiment=pose_coco_hrformer_s_256x192",
                                          "trainer=multinode", "trainer.num_nodes=2", "trainer.devices=8"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.max_num_timeout > 0   # its signal and requeue: tests/test_preemption.py
    # what SLURM sets for the 10th task of that job (node 1, local rank 1); Lightning must take it as global rank 9
    # of 16, which needs tasks per node == devices (it refuses the job otherwise)
    for key, value in {"SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
                       "SLURM_NODEID": "1", "SLURM_JOB_NAME": "hrformer", "SLURM_JOB_ID": "123",
                       "SLURM_NODELIST": "node[1-2]"}.items():
        monkeypatch.setenv(key, value)
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)   # the Trainer sets it to 9: restored after
    trainer = L.Trainer(accelerator="cpu", devices=launcher.tasks_per_node, num_nodes=launcher.nodes,
                        strategy=cfg.trainer.strategy, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    assert type(trainer.strategy.cluster_environment).__name__ == "SLURMEnvironment"
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (9, 1, 1, 16)

"""What a run decides from its surroundings: W&B credentials for the public or a self-hosted server (W&B's own netrc
lookup is the oracle), which runs are smoke tests, what a failed sweep trial returns, which checkpoint resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.resume import checkpoint_to_resume, latest_checkpoint
from hrformer.utils.smoke import smoke_reason
from hrformer.utils.status import write_status
from hrformer.utils.sweep import trial_value
from hrformer.utils.wandb import has_credentials, server_url

KEY = "0123456789abcdef0123456789abcdef01234567"   # 40 characters, the form of a W&B API key


@pytest.mark.parametrize(("base_url", "machine", "expected"), [
    (None, "api.wandb.ai", True),                                   # the public server
    ("https://wandb.example.com", "wandb.example.com", True),       # a self-hosted one
    ("https://wandb.example.com", "api.wandb.ai", False),           # a key for another server only
    ("https://wandb.example.com:8443", "wandb.example.com:8443", True),
])
def test_wandb_credentials_are_those_of_the_server_runs_log_to(base_url, machine, expected, tmp_path, monkeypatch):
    from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

    (tmp_path / "netrc").write_text(f"machine {machine}\n  login user\n  password {KEY}\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    if base_url:
        monkeypatch.setenv("WANDB_BASE_URL", base_url)
    else:
        monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert has_credentials() is expected
    assert (read_netrc_auth(host=server_url()) == KEY) is expected   # W&B itself finds the key, or not


def test_the_server_of_wandb_login_host_is_read_from_wandbs_settings(tmp_path, monkeypatch):
    (tmp_path / "settings").write_text("[default]\nbase_url = https://wandb.example.com\n")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert server_url() == "https://wandb.example.com"


@pytest.fixture(autouse=True)
def no_hydra_runtime_left():
    """hydra_job sets Hydra's runtime singleton: leave none behind for the tests that follow in this process."""
    yield
    HydraConfig.instance().cfg = None


def hydra_job(*overrides: str):
    """The config of a run with these command-line overrides, with Hydra's runtime set as in that run."""
    cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize(("overrides", "reason"), [
    (["debug=limit"], "debug=limit"),
    (["+trainer.fast_dev_run=true"], "trainer.fast_dev_run=True"),
    (["trainer.limit_train_batches=0.1"], "trainer.limit_train_batches=0.1"),
    (["trainer.max_steps=5"], "trainer.max_steps=5 (the recipe's: -1)"),
    (["experiment=pose_synthetic", "trainer.max_epochs=2"], "trainer.max_epochs=2 (the recipe's: 10)"),
    (["experiment=pose_synthetic", "trainer.max_time=00:00:01:00"], "trainer.max_time=00:00:01:00 (the recipe's: "
                                                                   "00:00:13:30)"),
    (["experiment=pose_synthetic", "trainer.max_epochs=20"], None),   # longer than the recipe
    (["experiment=pose_synthetic", "optimizer.lr=1e-3"], None),
])
def test_smoke_runs_are_told_from_recipe_runs(overrides, reason):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        assert smoke_reason(hydra_job(*overrides)) == reason


def test_a_failed_or_nan_sweep_trial_returns_the_worst_value_for_the_direction():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_job("hparams_search=optuna")
        assert trial_value(cfg, {"val/AP": 0.25}) == 0.25
        assert trial_value(cfg, {"val/AP": math.nan}) == trial_value(cfg, {}) == -math.inf
        assert trial_value(cfg, None, ValueError("boom")) == -math.inf
        assert trial_value(hydra_job("hparams_search=optuna", "hydra.sweeper.direction=minimize"), {}) == math.inf
        plain = hydra_job()   # not a sweep: what the run measured, as it is
        assert trial_value(plain, {"val/AP": 0.25}) == 0.25 and trial_value(plain, {}) is None


def test_the_latest_checkpoint_is_the_one_of_the_highest_step(tmp_path, monkeypatch):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 0)   # whatever Trainer an earlier test built set it to
    (tmp_path / "checkpoints").mkdir()
    for name, step in (("best_epoch001.ckpt", 6), ("last.ckpt", 6), ("best_epoch000.ckpt", 3)):
        torch.save({"global_step": step}, tmp_path / "checkpoints" / name)
    (tmp_path / "checkpoints" / "broken.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"global_step": 4}, tmp_path / "hpc_ckpt_1.ckpt")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"   # at equal steps, last.ckpt
    torch.save({"global_step": 7}, tmp_path / "checkpoints" / "best_epoch002.ckpt")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "best_epoch002.ckpt"
    assert latest_checkpoint(tmp_path / "nothing") is None

    cfg = OmegaConf.create({"resume": None, "ckpt_path": None})
    assert checkpoint_to_resume(cfg, tmp_path) is None   # a fresh start
    write_status(tmp_path, "requeued", 7, 2)   # a run that requeued itself resumes without being told
    assert checkpoint_to_resume(cfg, tmp_path) == str(tmp_path / "checkpoints" / "best_epoch002.ckpt")
    with pytest.raises(ValueError, match="give one or the other"):
        checkpoint_to_resume(OmegaConf.create({"resume": str(tmp_path), "ckpt_path": "x.ckpt"}), tmp_path)


def test_a_run_directory_keeps_its_wandb_run(tmp_path):
    """The W&B id is written before anything can fail, and a resumed or requeued run continues that W&B run."""
    from hrformer.utils.wandb import prepare_run

    cfg = OmegaConf.create({"logger": {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "id": None,
                                                 "project": "hrformer", "group": "g", "name": "n"}}})
    first = prepare_run(cfg, tmp_path)
    assert len(first) == 8 and cfg.logger.wandb.resume == "allow"
    assert json.loads((tmp_path / "wandb_run.json").read_text())["id"] == first
    again = OmegaConf.create({"logger": {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "id": None}}})
    assert prepare_run(again, tmp_path) == first == again.logger.wandb.id
    assert prepare_run(OmegaConf.create({"logger": {"csv": {"_target_": "CSVLogger"}}}), tmp_path / "x") is None


def test_the_resume_checkpoint_is_written_by_steps_by_minutes_and_at_epoch_ends(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import hrformer.checkpointing as checkpointing

    clock = [1000.0]
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock[0])

    def train(callback, batches: int) -> list[int]:
        """``batches`` batches of one minute, two per optimizer step: the steps the checkpoint was written at."""
        saved = []
        trainer = SimpleNamespace(accumulate_grad_batches=2, global_step=0, world_size=1,
                                  save_checkpoint=lambda path, weights_only: saved.append(trainer.global_step))
        callback.on_train_start(trainer, None)
        for batch_idx in range(batches):
            clock[0] += 60
            trainer.global_step = (batch_idx + 1) // 2
            callback.on_train_batch_end(trainer, None, None, None, batch_idx)
        callback.on_train_epoch_end(trainer, None)
        return saved

    assert train(checkpointing.ResumeCheckpoint(tmp_path, every_n_train_steps=3), 16) == [3, 6, 8]
    # due at minutes 23 and 47, both within an accumulation: written at the end of the step (minutes 24 and 48)
    assert train(checkpointing.ResumeCheckpoint(tmp_path, every_n_minutes=22.5), 70) == [12, 24, 35]
    assert train(checkpointing.ResumeCheckpoint(tmp_path), 10) == [5]   # epoch ends only

"""The Hydra entry points on the tiny real COCO sample: train writes its run directory, resumes, eval reuses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT, SHARED

TINY = SHARED / "data" / "coco_keypoints_tiny"
SMALL = [  # tiny real data, small crops, no workers: fast on CPU
    f"data.root={TINY}", "data.train_ann=annotations/person_keypoints_tiny.json",
    "data.val_ann=annotations/person_keypoints_tiny.json", "data.train_images=images/val2017",
    "data.synthetic=null", "data.num_workers=0", "data.batch_size=4", "data.val_batch_size=16",
    "task.codec.input_size=[48,64]", "task.codec.heatmap_size=[12,16]", "task.codec.sigma=1.0",
    "scheduler.warmup_steps=1", "trainer.check_val_every_n_epoch=1", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "logger=csv", "trainer=cpu",   # one process (the main job runs two)
]


def run(module: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    if not any(o.startswith("results_file=") for o in overrides):  # keep test runs out of outputs/results.jsonl
        overrides = (*overrides, "results_file=null")
    proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run("hrformer.train", *SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    return run_dir


def test_run_directory(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("val/AP", "val/AP50", "val/AP75", "val/APm", "val/APl", "val/AR", "val/AR50", "val/AR75",
                "val/ARm", "val/ARl"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert len(list((trained / "checkpoints").glob("best_*.ckpt"))) == 1
    cfg = yaml.safe_load((trained / "config.yaml").read_text())
    assert cfg["backbone"]["name"] == "hrformer_t" and cfg["seed"] == 42
    results = json.loads((trained / "val_results.json").read_text())
    assert results and {"image_id", "category_id", "keypoints", "score"} <= set(results[0])


def test_resume_from_last_checkpoint(trained):
    """A run stopped after epoch 1 continues from last.ckpt to the configured epoch count."""
    before = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert before["global_step"] == 3  # 12 people / batch 4 = 3 steps per epoch
    run("hrformer.train", *SMALL, "trainer.max_epochs=2", "ckpt_path=last", f"hydra.run.dir={trained}")
    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 * 3  # two whole epochs, the first one not repeated
    metrics = json.loads((trained / "metrics.json").read_text())
    assert all(v is not None for v in metrics.values())


def test_eval_uses_the_training_config(trained, tmp_path):
    out = tmp_path / "eval"
    run("hrformer.eval", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "task.task.flip_test=false",
        "task.codec.blur_kernel_size=5", f"hydra.run.dir={out}")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["task"]["codec"]["input_size"] == [48, 64]  # from the training run
    assert cfg["task"]["task"]["flip_test"] is False       # from this command line
    # an override reaches every key that refers to it: the task's and the datamodule's codec are ${task.codec}
    assert cfg["task"]["task"]["codec"]["blur_kernel_size"] == cfg["data"]["codec"]["blur_kernel_size"] == 5
    assert cfg["paths"]["output_dir"] == str(out) and cfg["task"]["task"]["results_file"].startswith(str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val/AP"] <= 1.0


def test_training_loss_falls(tmp_path):
    """Overfitting the 12 tiny-set people: the training loss of the last epoch is well below the first."""
    run("hrformer.train", *SMALL, "trainer.max_epochs=8", "trainer.check_val_every_n_epoch=100",
        "data.augmentation.rotation_prob=0", "data.augmentation.flip_prob=0", "data.augmentation.half_body_prob=0",
        "data.augmentation.scale_factor=0", "optimizer.lr=2e-3", "trainer.log_every_n_steps=1",
        f"hydra.run.dir={tmp_path}")
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train/loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses


def test_final_metrics_are_the_final_models_when_the_last_epoch_is_not_validated(tmp_path):
    """3 epochs, validation every 2: the run validates the final model after training, so metrics.json equals an
    evaluation of last.ckpt (the epoch-3 model), not the epoch-2 validation."""
    run("hrformer.train", *SMALL, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", "callbacks=default",
        "optimizer.lr=5e-3", f"hydra.run.dir={tmp_path / 'run'}")
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2   # 0-based: the third epoch
    run("hrformer.eval", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'ev'}")
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert evaluated == pytest.approx(final, rel=1e-6)   # the loss's float sums may be ordered differently
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    validated = [r.split(",")[header.index("epoch")] for r in rows[1:] if r.split(",")[header.index("val/AP")]]
    assert validated == ["1", "3"]   # the scheduled validation in epoch 2 (0-based 1), then the final model's
    epoch2_loss = next(float(r.split(",")[header.index("val/loss")]) for r in rows[1:]
                       if r.split(",")[header.index("val/AP")])
    assert abs(epoch2_loss - final["val/loss"]) > 1e-4 * final["val/loss"]   # a different model than epoch 2's

"""Failures as a user meets them: a NaN loss stops the run with the step and the batch's images (or skips the step by
option) and the crashed run shows as failed on W&B (offline: its transaction log) with its id and where it stopped
in the run directory; a run without a logger works with every callbacks preset."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from hrformer.train import train
from hrformer.utils.paths import CONFIG_DIR
from tests.conftest import REPO_ROOT
from tests.test_train import SMALL

NAN = "+callbacks.nan._target_=tests.faults.NaNTarget"


def train_process(*overrides: str, wandb_mode: str = "disabled") -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": wandb_mode, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "hrformer.train", *SMALL, "threads=1", "results_file=null",
                           "callbacks.prediction_pictures=null", *overrides], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (``run-ID.wandb``, what ``wandb sync`` uploads): a 7-byte header, then
    LevelDB log blocks of 32 KiB holding records (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, pending, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:   # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_a_nan_loss_stops_the_run_naming_step_and_images_and_w_and_b_shows_it_failed(tmp_path):
    run_dir, seen = tmp_path / "run", tmp_path / "seen"
    proc = train_process("logger=wandb", "trainer.max_epochs=2", NAN, "+callbacks.nan.step=2",
                         f"+callbacks.nan.record={seen}", f"hydra.run.dir={run_dir}", wandb_mode="offline")
    assert proc.returncode != 0
    ids = json.loads((seen / "ids.json").read_text())   # the images of the poisoned batch, as the injector saw them
    assert f"NonFiniteLossError: non-finite training loss nan at step 2 (epoch 0, batch 2 of the epoch), images {ids}" \
        in proc.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["step"], status["epoch"]) == ("failed", 2, 0)
    assert status["error"].startswith("NonFiniteLossError: non-finite training loss nan at step 2")
    assert not (run_dir / "metrics.json").exists()

    run_id = json.loads((run_dir / "wandb_run.json").read_text())["id"]
    (log,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    records = {r.WhichOneof("record_type"): r for r in wandb_records(log)}
    assert records["run"].run.run_id == run_id
    assert records["exit"].exit.exit_code == 1   # W&B shows the run failed, not finished
    metric = records["metric"].metric   # the key metric's summary is its best value
    assert metric.name == "val/AP" and metric.summary.max


def test_a_nan_loss_skips_the_step_by_option(tmp_path):
    run_dir, seen = tmp_path / "run", tmp_path / "seen"
    proc = train_process("on_nonfinite_loss=skip", "trainer.max_epochs=2", NAN, "+callbacks.nan.step=4",
                         f"+callbacks.nan.record={seen}", "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = json.loads((seen / "ids.json").read_text())
    assert f"non-finite training loss nan at step 4 (epoch 1, batch 1 of the epoch), images {ids}: optimizer step " \
        "skipped (1 this epoch)" in proc.stdout + proc.stderr   # (Hydra logs to stdout)
    before, after = torch.load(seen / "before.pt"), torch.load(seen / "after.pt")
    for key, value in before.items():   # the weights did not move in the skipped step (AdamW moves them with
        assert torch.equal(after[key], value), key   # zero gradients: its momentum and weight decay)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train/nonfinite_skipped")
    assert [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]] == [0.0, 1.0]   # per epoch
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIG_DIR / "callbacks").glob("*.yaml")))
def test_logger_none_works_with_every_callbacks_preset(preset, tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*SMALL, "logger=none", f"callbacks={preset}", "trainer.max_steps=2",
                                          "trainer.limit_val_batches=1", "threads=1", "results_file=null",
                                          f"paths.output_dir={tmp_path}"])
    metrics = train(cfg)
    assert metrics["val/loss"] > 0
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "finished"

"""Corrupt images as a user meets them: a COCO JPEG cut to its first 2,000 bytes (an interrupted copy), which OpenCV
decodes with grey rows and a warning only, is caught by the one image reader; hrformer-check-data lists it; met
during DDP training it stops the run naming the file (``data.on_bad_image=raise``) or is skipped and counted
(``skip``), and the other rank never waits for ever."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from hrformer.data.common import read_rgb
from hrformer.data.integrity import TruncatedImageError, image_problem
from hrformer.tools.check_data import main as check_data
from tests.conftest import REPO_ROOT
from tests.test_train import SMALL, TINY

IMAGES = TINY / "images" / "val2017"
BAD = "000000000785.jpg"   # one person of the tiny set: met by one DDP rank only


def cut(src, dst, size: int) -> None:
    dst.write_bytes(src.read_bytes()[:size])


def test_a_truncated_jpeg_decodes_grey_in_opencv_and_is_refused_by_read_rgb(tmp_path):
    whole = IMAGES / BAD
    cut(whole, tmp_path / "cut.jpg", 2000)
    grey = cv2.imread(str(tmp_path / "cut.jpg"))   # what training used to get: an image, its rows filled with grey
    assert grey is not None and grey.shape == cv2.imread(str(whole)).shape
    assert (grey[-50:] == 128).all()
    with pytest.raises(TruncatedImageError, match=f"cannot read image {tmp_path / 'cut.jpg'}: truncated"):
        read_rgb(tmp_path / "cut.jpg")
    for size in (100, 700, 1200, 5000, whole.stat().st_size - 1):   # before, in and after the headers
        cut(whole, tmp_path / "c.jpg", size)
        assert image_problem(tmp_path / "c.jpg").startswith("truncated"), size
    assert read_rgb(whole).shape == grey.shape[:2] + (3,)
    # bytes after the end-of-image marker (camera trailers, motion photos) are no truncation
    (tmp_path / "trailer.jpg").write_bytes(whole.read_bytes() + b"\x00" * 10_000)
    assert image_problem(tmp_path / "trailer.jpg") is None


def test_progressive_jpegs_pngs_and_other_formats(tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    image.save(tmp_path / "p.jpg", progressive=True, quality=90)
    image.save(tmp_path / "i.png")
    image.save(tmp_path / "i.bmp")
    for name in ("p.jpg", "i.png"):
        whole = tmp_path / name
        assert image_problem(whole) is None and (read_rgb(whole) > -1).all()
        cut(whole, tmp_path / f"cut_{name}", whole.stat().st_size // 2)
        with pytest.raises(TruncatedImageError, match="truncated"):
            read_rgb(tmp_path / f"cut_{name}")
    assert image_problem(tmp_path / "i.bmp") is None   # left to the decoder


def test_check_data_lists_every_unreadable_or_truncated_file(tmp_path, capsys):
    shutil.copytree(IMAGES, tmp_path / "images")
    cut(IMAGES / BAD, tmp_path / "images" / BAD, 2000)
    (tmp_path / "images" / "sub").mkdir()
    (tmp_path / "images" / "sub" / "notes.PNG").write_text("not an image")
    assert check_data([str(tmp_path / "images"), "--workers", "1"]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{tmp_path / 'images' / BAD}: truncated: no JPEG end-of-image marker after the "
                                    "image data (2000 bytes)",
                                    f"{tmp_path / 'images' / 'sub' / 'notes.PNG'}: missing, unreadable or not a "
                                    "decodable image"]
    assert "2 of 5 image files unreadable or truncated" in out.err
    assert check_data([str(IMAGES), "--quick"]) == 0
    assert check_data([str(tmp_path / "missing")]) == 2


def ddp_train(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """trainer=ddp_sim (two CPU processes, 6 people each, 3 per batch: every image trained every epoch) on a copy of
    the training images in which BAD is cut to 2,000 bytes; validation reads the intact originals.  The backbone
    returns its highest-resolution branch only: the base pose composition fuses all four branches in the last stage,
    which the heatmap head does not use, and DDP refuses unused parameters from the second step on."""
    images = tmp_path / "images"
    shutil.copytree(IMAGES, images)
    cut(IMAGES / BAD, images / BAD, 2000)
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hrformer.train", *SMALL, "trainer=ddp_sim", "data.batch_size=3",
                           "backbone.multiscale_output=false",
                           f"data.train_images={images}", "results_file=null", "callbacks.prediction_pictures=null",
                           "trainer.log_every_n_steps=1", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_training_stops_naming_a_truncated_image(tmp_path):
    """Only one rank meets the bad image: the run ends (the other rank is not left waiting in an all-reduce)."""
    proc = ddp_train(tmp_path, "trainer.max_epochs=1")
    assert proc.returncode != 0
    assert f"cannot read image {tmp_path / 'images' / BAD}: truncated" in proc.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and BAD in status["error"]


def test_ddp_training_skips_a_truncated_image_and_counts_it_per_epoch(tmp_path):
    """One rank meets the bad image and trains on a smaller batch; the other rank meets a NaN loss that every rank
    skips (on_nonfinite_loss=skip): no rank waits for another."""
    proc = ddp_train(tmp_path, "data.on_bad_image=skip", "trainer.max_epochs=2", "on_nonfinite_loss=skip",
                     "+callbacks.nan._target_=tests.faults.NaNTarget", "+callbacks.nan.step=1", "+callbacks.nan.rank=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("skipped a training image (step ") == 2 and f"{tmp_path / 'images' / BAD}: truncated" in log
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    per_epoch = [r.split(",") for r in rows[1:] if r.split(",")[header.index("train/skipped_images")]]
    people = sum(1 for a in json.loads((TINY / "annotations" / "person_keypoints_tiny.json").read_text())["annotations"]
                 if a["image_id"] == 785 and max(a["keypoints"][2::3]) > 0)
    assert [float(r[header.index("train/skipped_images")]) for r in per_epoch] == [people, people] == [1, 1]
    assert [float(r[header.index("train/nonfinite_skipped")]) for r in per_epoch] == [1.0, 0.0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/loss"] > 0

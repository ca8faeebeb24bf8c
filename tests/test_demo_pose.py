"""scripts/demo_pose.py on a 1-epoch training run of the tiny real COCO sample (which also writes pictures)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, load_script
from tests.test_train import SMALL, TINY, run

SCRIPT = REPO_ROOT / "scripts" / "demo_pose.py"
IMAGE_ID = 785
IMAGE = TINY / "images" / "val2017" / f"{IMAGE_ID:012d}.jpg"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run("hrformer.train", *SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    return run_dir


def demo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_training_writes_prediction_pictures(trained):
    pictures = sorted((trained / "pictures").glob("*.png"))
    assert pictures and len(pictures) <= 8
    assert all(p.name.startswith("epoch000_") for p in pictures)
    assert cv2.imread(str(pictures[0])) is not None


def test_demo_draws_the_detected_people(trained, tmp_path):
    dets = json.loads((TINY / "person_detection_results" / "test_coco_det_AP_H_56.json").read_text())
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([d for d in dets if d["image_id"] == IMAGE_ID and d["score"] > 0.5]))
    out = tmp_path / "demo.png"
    proc = demo("--ckpt", trained / "checkpoints" / "last.ckpt", "--image", IMAGE, "--boxes", boxes, "--out", out,
                "--score-thr", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    people = [line for line in proc.stdout.splitlines() if line.startswith("person ")]
    assert len(people) == sum(d["image_id"] == IMAGE_ID and d["score"] > 0.5 for d in dets) > 0
    assert all("mean keypoint score" in line for line in people)
    drawn, original = cv2.imread(str(out)), cv2.imread(str(IMAGE))
    assert drawn.shape == original.shape
    assert (np.abs(drawn.astype(int) - original.astype(int)).max(-1) > 60).sum() > 100  # skeletons drawn


def test_demo_names_an_unreadable_image(tmp_path, capsys):
    module = load_script("demo_pose")
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("nope")
    assert module.main(["--ckpt", str(tmp_path / "x.ckpt"), "--image", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert str(bad) in capsys.readouterr().err

"""Segmentation end to end on a tiny synthetic set: the train run directory, eval of its checkpoint, the demo,
and the W&B mask pictures."""

from __future__ import annotations

import csv
import json
import math
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import WandbLogger
from omegaconf import OmegaConf

from hrformer.callbacks import PredictionPictures
from hrformer.eval import evaluate
from hrformer.tasks.segmentation import SegmentationTask
from hrformer.utils.paths import CONFIG_DIR
from hrformer.visualize import seg_palette
from tests.conftest import load_script
from tests.test_train import run


def tiny_overrides(data_root) -> list[str]:
    return [
        "experiment=seg_synthetic", f"data.root={data_root}", "data.synthetic.num_train=8",
        "data.synthetic.num_val=4", "data.synthetic.image_size=[64,64]", "data.crop_size=[64,64]",
        "data.batch_size=4", "data.val_batch_size=3", "data.num_workers=0", "threads=1",
        "scheduler.warmup_steps=1", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg")
    run_dir = base / "run"
    run("hrformer.train", *tiny_overrides(base / "syn"), f"hydra.run.dir={run_dir}")
    return run_dir


def read_table(path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_run_directory(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) == {"val/mIoU", "val/mAcc", "val/aAcc", "val/loss"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("val/mIoU", "val/mAcc", "val/aAcc"))
    rows = read_table(trained / "val_per_class.csv")
    classes = rows[:8]
    assert [r["name"] for r in classes] == ["background", "disc", "stripes", "checker", "triangle", "dots", "bar",
                                            "ring"]
    ious = [float(r["IoU"]) for r in classes if r["IoU"]]
    assert np.mean(ious) == pytest.approx(metrics["val/mIoU"], abs=1e-6)  # the table of the final validation
    assert float(rows[9]["IoU"]) == pytest.approx(metrics["val/aAcc"], abs=1e-6)
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert len(list((trained / "checkpoints").glob("best_*.ckpt"))) == 1
    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt_cb = next(v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert "val/mIoU" in str([k for k in state["callbacks"] if k.startswith("ModelCheckpoint")])
    assert math.isfinite(float(ckpt_cb["best_model_score"]))
    pictures = sorted((trained / "pictures").glob("epoch001_*.png"))
    assert len(pictures) == 3  # the first validation batch
    assert cv2.imread(str(pictures[0])).shape[1] == 3 * 64 + 2 * 2  # image | prediction | ground truth


def test_eval_reproduces_the_final_validation_and_writes_its_own_table(trained, tmp_path):
    table = (trained / "val_per_class.csv").read_bytes()
    out = tmp_path / "eval"
    ckpt = trained / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", f"paths.output_dir={out}"])
    metrics = evaluate(cfg, [])
    final = json.loads((trained / "metrics.json").read_text())
    for key in ("val/mIoU", "val/mAcc", "val/aAcc"):
        assert metrics[key] == pytest.approx(final[key], abs=1e-6)
    assert (out / "val_per_class.csv").read_bytes() == table
    flipped = evaluate(cfg, ["task.task.flip=true", "task.task.scales=[0.75,1.0]"])
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(flipped)
    assert (trained / "val_per_class.csv").read_bytes() == table  # the training run's table is left alone


def load_demo():
    return load_script("demo_seg")


def test_demo_writes_a_class_colour_overlay(trained, tmp_path, capsys):
    image_path = next((trained.parent / "syn" / "leftImg8bit" / "val").rglob("*.png"))
    out = tmp_path / "demo.png"
    assert load_demo().main(["--ckpt", str(trained / "checkpoints" / "last.ckpt"), "--image", str(image_path),
                             "--out", str(out)]) == 0
    printed = dict(re.findall(r"^(\w+): ([\d.]+) %$", capsys.readouterr().out, re.M))
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB).astype(np.int64)
    drawn = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB).astype(np.int64)
    assert drawn.shape == image.shape
    # alpha 0.5: every pixel is the mean of the image and its class colour -> recover the colour, then the class
    data_cfg = OmegaConf.load(CONFIG_DIR / "data" / "cityscapes_synthetic.yaml")
    palette = seg_palette(8, data_cfg.palette)[:8].astype(np.int64)
    dist = np.abs((2 * drawn - image)[..., None, :] - palette[None, None]).max(-1)
    assert (dist.min(-1) <= 2).all()
    classes = dist.argmin(-1)
    shares = {data_cfg.class_names[int(c)]: 100.0 * n / classes.size
              for c, n in zip(*np.unique(classes, return_counts=True), strict=True)}
    assert set(shares) == set(printed)
    for name, share in shares.items():
        assert float(printed[name]) == pytest.approx(share, abs=0.06)


def test_demo_names_an_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    assert load_demo().main(["--ckpt", str(tmp_path / "x.ckpt"), "--image", str(bad), "--out",
                             str(tmp_path / "o.png")]) == 2
    assert str(bad) in capsys.readouterr().err


class RecordingWandb(WandbLogger):
    def __init__(self):
        super().__init__(offline=True)
        self.calls = []

    def log_image(self, key, images, step=None, **kwargs):
        self.calls.append({"key": key, "images": images, "step": step, **kwargs})


def test_wandb_gets_interactive_masks_with_class_names(tmp_path):
    import wandb

    names = ["sky", "road", "car"]
    task = SegmentationTask(3, class_names=names)
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]], dtype=torch.uint8)
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]], dtype=torch.uint8)
    batch = {"image": torch.zeros(1, 3, 2, 4), "label": label[None], "name": ["frame"]}
    logger = RecordingWandb()
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, default_root_dir=str(tmp_path),
                              log_dir=None, current_epoch=4, global_step=40, loggers=[logger])
    module = SimpleNamespace(task=task, last_val_outputs=[{"batch": batch, "outputs": {"pred": [pred]}}])
    PredictionPictures(max_images=4).on_validation_epoch_end(trainer, module)
    assert (tmp_path / "pictures" / "epoch004_00_frame.png").is_file()
    (call,) = logger.calls
    assert call["key"] == "val/predictions" and call["step"] == 40 and call["caption"] == ["epoch 4 00_frame"]
    masks = call["masks"][0]
    assert np.array_equal(masks["predictions"]["mask_data"], pred.numpy())
    assert np.array_equal(masks["ground_truth"]["mask_data"], label.numpy())
    assert masks["ground_truth"]["class_labels"] == {0: "sky", 1: "road", 2: "car", 255: "ignore"}
    wandb.Image(call["images"][0], masks=masks)  # a valid wandb.Image


@pytest.mark.slow
def test_ddp_validation_counts_every_image_once(tmp_path):
    """Two processes, 5 validation images (the default sampler would repeat one): the DDP validation of the last
    epoch equals a one-process evaluation of the same checkpoint."""
    run_dir = tmp_path / "run"
    run("hrformer.train", *tiny_overrides(tmp_path / "syn"), "data.synthetic.num_val=5", "trainer=ddp_sim",
        "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    ddp = json.loads((run_dir / "metrics.json").read_text())
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                         f"paths.output_dir={tmp_path / 'eval'}"])
    single = evaluate(cfg, [])
    for key in ("val/mIoU", "val/mAcc", "val/aAcc"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)
    gt_pixels = sum(int(r["gt_pixels"]) for r in read_table(tmp_path / "eval" / "val_per_class.csv")[:8])
    assert gt_pixels == sum(int(r["gt_pixels"]) for r in read_table(run_dir / "val_per_class.csv")[:8])

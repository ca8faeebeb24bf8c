"""Classification end to end on the tiny real ImageFolder: train (with EMA) writes its run directory, eval reuses it
and reproduces the run's final metrics, the demo prints the checkpoint's top-5."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hrformer.data.cls_transforms import build_val_transform
from hrformer.data.imagefolder import ImageFolderDataset
from tests.conftest import SHARED, load_script
from tests.test_train import run

TINY = SHARED / "data" / "imagefolder_tiny"
CLASSES = ["bird", "cat", "dog", "snake"]
SMALL = [  # the cls_synthetic experiment on the 5 real photos (train = val), small crops, no workers
    "experiment=cls_synthetic", f"data.root={TINY}", "data.train_dir=.", "data.val_dir=.", "data.num_classes=4",
    "data.synthetic=null", "data.num_workers=0", "data.batch_size=4", "data.val_batch_size=5", "data.train_size=48",
    "data.val_size=48", "trainer.check_val_every_n_epoch=1", "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv", "callbacks=ema",
    "callbacks.ema.decay=0.5", "threads=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cls_run")
    run("hrformer.train", *SMALL, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def demo():
    return load_script("demo_cls")


def test_run_directory(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) == {"val/loss", "val/top1", "val/top5"}
    assert any(metrics["val/top1"] == pytest.approx(k / 5) for k in range(6))  # 5 images
    assert metrics["val/top5"] == 1.0  # 4 classes
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert len(list((trained / "checkpoints").glob("best_*.ckpt"))) == 1
    assert len(list((trained / "pictures").glob("epoch001_*.png"))) == 5
    cfg = yaml.safe_load((trained / "config.yaml").read_text())
    assert cfg["task"]["key_metric"] == "val/top1" and cfg["callbacks"]["model_checkpoint"]["monitor"] == "val/top1"
    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["task_state"]["class_names"] == CLASSES
    assert state["global_step"] == 2  # 5 images, batch 4, last partial batch dropped: one step per epoch
    # EMA: the checkpoint's state_dict holds the averaged weights, the raw ones are kept beside them
    raw, averaged = state["current_model_state"], state["state_dict"]
    key = "head.classifier.weight"
    assert averaged[key].shape == (4, 2048) and not torch.equal(raw[key], averaged[key])


def test_eval_reproduces_the_final_validation_metrics(trained, tmp_path):
    out = tmp_path / "eval"
    run("hrformer.eval", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={out}")
    train_metrics = json.loads((trained / "metrics.json").read_text())
    eval_metrics = json.loads((out / "metrics.json").read_text())
    assert eval_metrics["val/top1"] == train_metrics["val/top1"]
    assert eval_metrics["val/loss"] == pytest.approx(train_metrics["val/loss"], rel=1e-4)


def test_demo_prints_the_top5_of_the_checkpoint(trained, demo, capsys):
    ckpt = trained / "checkpoints" / "last.ckpt"
    image = TINY / "cat" / "skimage_chelsea.png"
    assert demo.main(["--ckpt", str(ckpt), "--image", str(image), "--device", "cpu"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [int(r) for r, *_ in lines] == [1, 2, 3, 4]  # top-5 of a 4-class model: all four
    probs = [float(p) for _, p, _, _ in lines]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-3)
    assert sorted(name for *_, name in lines) == CLASSES
    # the same probabilities as the validation pipeline gives that photo
    module, _ = demo.load_run(ckpt)
    dataset = ImageFolderDataset(TINY, transform=build_val_transform(48))
    index = next(i for i, (p, _) in enumerate(dataset.samples) if p.endswith("skimage_chelsea.png"))
    with torch.no_grad():
        expected = module(dataset[index]["image"][None]).softmax(-1)[0]
    for _, p, i, _ in lines:
        assert float(p) == pytest.approx(expected[int(i)].item(), abs=1e-4)


def test_demo_names_an_unreadable_image_or_checkpoint(trained, demo, tmp_path, capsys):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("nope")
    assert demo.main(["--ckpt", str(trained / "checkpoints" / "last.ckpt"), "--image", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    dog = TINY / "dog" / "mmpretrain_dog.jpg"
    assert demo.main(["--ckpt", str(tmp_path / "missing.ckpt"), "--image", str(dog)]) == 2
    assert "missing.ckpt" in capsys.readouterr().err

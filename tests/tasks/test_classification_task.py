"""ClassificationTask: micro top-k accuracy, training on a batch transform, pictures and the W&B table."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from hrformer.callbacks import PredictionPictures
from hrformer.data.synthetic.imagefolder_shapes import CLASSES, render
from hrformer.tasks.classification import CORRECT_COLOR, WRONG_COLOR, ClassificationTask
from hrformer.tasks.mixup import MixupCutmix


def numpy_topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of images whose label is among the k largest logits (the papers' top-k)."""
    topk = np.argsort(-logits, axis=1)[:, :k]
    return float((topk == labels[:, None]).any(1).mean())


def test_topk_accuracies_are_micro_averages_over_all_batches():
    torch.manual_seed(0)
    task = ClassificationTask(num_classes=7, mixup=None)
    # imbalanced classes and a model better on the frequent ones: micro and macro averages differ
    labels = torch.cat([torch.zeros(60, dtype=torch.long), torch.randint(1, 7, (40,))])
    logits = torch.randn(100, 7)
    logits[:60, 0] += 2.5
    model = lambda images: logits[images.long().view(-1)]  # noqa: E731 - "images" carry their row index
    for chunk in torch.arange(100).split(13):  # uneven batches
        task.validation_step(model, {"image": chunk.float(), "label": labels[chunk]})
    metrics = task.compute_metrics()
    for k in (1, 5):
        assert metrics[f"val/top{k}"] == pytest.approx(numpy_topk_accuracy(logits.numpy(), labels.numpy(), k))
    macro = MulticlassAccuracy(7, top_k=1)(logits, labels).item()
    assert abs(macro - metrics["val/top1"]) > 0.05
    with pytest.warns(UserWarning, match="before the ``update``"):  # reset after compute
        assert task.compute_metrics()["val/top1"] == 0.0


def test_top5_with_fewer_classes_counts_every_image():
    task = ClassificationTask(num_classes=4)
    task.validation_step(lambda x: torch.randn(len(x), 4), {"image": torch.zeros(9), "label": torch.arange(9) % 4})
    assert task.compute_metrics()["val/top5"] == 1.0


def _shapes_batch(n_per_class: int, size: int = 32, seed: int = 0) -> dict:
    images, labels = [], []
    for c, name in enumerate(CLASSES):
        for i in range(n_per_class):
            image = render(np.random.default_rng([seed, c, i]), name, size)
            images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
            labels.append(c)
    return {"image": torch.stack(images), "label": torch.tensor(labels)}


def test_mixup_training_loss_falls_and_accuracy_rises():
    """A small CNN trained through the task (Mixup/CutMix + label smoothing) fits a batch of synthetic images."""
    torch.manual_seed(0)
    train = _shapes_batch(5, size=24)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(CLASSES)))
    task = ClassificationTask(len(CLASSES), label_smoothing=0.1, mixup=MixupCutmix(prob=0.5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def val_top1() -> float:
        model.eval()
        task.validation_step(model, train)
        model.train()
        return task.compute_metrics()["val/top1"]

    before, losses = val_top1(), []
    for _ in range(40):
        batch = task.training_batch(train)
        loss, logs = task.training_loss(model(batch["image"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["train/loss"].item())
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:10])
    assert val_top1() > max(0.7, before + 0.4)


def test_training_batch_mixes_only_with_mixup():
    batch = {"image": torch.randn(4, 3, 8, 8), "label": torch.tensor([0, 1, 2, 3])}
    assert ClassificationTask(4, mixup=None).training_batch(batch) is batch
    mixed = ClassificationTask(4, label_smoothing=0.0, mixup=MixupCutmix(prob=1.0)).training_batch(batch)
    assert mixed["soft_target"].shape == (4, 4) and not torch.equal(mixed["image"], batch["image"])
    torch.testing.assert_close(mixed["soft_target"].sum(1), torch.ones(4))


def _val_outputs(task: ClassificationTask, n: int = 6):
    torch.manual_seed(0)
    batch = {"image": torch.randn(n, 3, 24, 24), "label": torch.tensor([0, 1, 2, 0, 1, 2][:n]),
             "path": [f"c/{i}.jpg" for i in range(n)]}
    logits = torch.full((n, 3), -5.0)
    logits[torch.arange(n), torch.tensor([0, 1, 0, 0, 2, 2][:n])] = 5.0  # wrong at 2 and 4
    return batch, task.validation_step(lambda _: logits, batch)


def _has_color(image: np.ndarray, color) -> bool:
    return bool((np.abs(image.astype(int) - np.array(color)).sum(-1) < 60).any())


def test_pictures_name_and_colour_right_and_wrong_predictions():
    task = ClassificationTask(3, class_names=["ant", "bee", "cow"])
    batch, outputs = _val_outputs(task)
    pictures = task.pictures(batch, outputs, max_images=6, min_height=64)
    assert [name for name, _ in pictures] == [
        "00_ok_true-ant_pred-ant", "01_ok_true-bee_pred-bee", "02_wrong_true-cow_pred-ant",
        "03_ok_true-ant_pred-ant", "04_wrong_true-bee_pred-cow", "05_ok_true-cow_pred-cow"]
    for (name, image) in pictures:
        assert image.dtype == np.uint8 and image.shape[0] > 72 and image.shape[1] == 72  # 24 px x 3
        assert _has_color(image[72:], CORRECT_COLOR) == ("_ok_" in name)
        assert _has_color(image[72:], WRONG_COLOR) == ("_wrong_" in name)
    assert len(task.pictures(batch, outputs, max_images=3)) == 3


def test_callback_writes_pngs_and_a_wandb_table(tmp_path):
    task = ClassificationTask(3, class_names=["ant", "bee", "cow"])
    batch, outputs = _val_outputs(task)
    module = SimpleNamespace(task=task, last_val_outputs=[{"batch": batch, "outputs": outputs}])
    logger = MagicMock(spec=WandbLogger)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, default_root_dir=str(tmp_path),
                              log_dir=None, current_epoch=3, global_step=42, loggers=[logger])
    PredictionPictures(max_images=4).on_validation_epoch_end(trainer, module)
    assert len(list((tmp_path / "pictures").glob("epoch003_*.png"))) == 4
    logger.log_image.assert_called_once()
    kwargs = logger.log_table.call_args.kwargs
    assert kwargs["key"] == "val/prediction_table" and kwargs["step"] == 42
    assert kwargs["columns"] == ["image", "true", "predicted", "probability", "correct", "file"]
    rows = kwargs["data"]
    assert len(rows) == 4 and type(rows[0][0]).__name__ == "Image"
    # four images spread over the batch of six: indices 0, 2, 3, 5
    assert [(r[1], r[2], r[4], r[5]) for r in rows] == [
        ("ant", "ant", True, "c/0.jpg"), ("cow", "ant", False, "c/2.jpg"), ("ant", "ant", True, "c/3.jpg"),
        ("cow", "cow", True, "c/5.jpg")]
    assert all(0.9 < r[3] <= 1.0 for r in rows)


def test_class_names_come_from_the_data_and_travel_in_checkpoints():
    task = ClassificationTask(3)
    assert task.class_name(2) == "class 2"
    task.connect_datamodule(SimpleNamespace(class_names=["a", "b", "c"]))
    restored = ClassificationTask(3)
    restored.load_checkpoint_state(task.checkpoint_state())
    assert restored.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="4 class names for a 3-class model"):
        restored.connect_datamodule(SimpleNamespace(class_names=["a", "b", "c", "d"]))

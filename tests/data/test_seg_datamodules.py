"""Segmentation datamodules on the tiny real Cityscapes and ADE20K samples (and broken copies of them)."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hrformer.data.common import IMAGENET_MEAN, IMAGENET_STD
from hrformer.data.segmentation import (
    ADE20KDataModule,
    CityscapesDataModule,
    COCOStuffDataModule,
    PascalContextDataModule,
    UnpaddedDistributedSampler,
    seg_collate,
    train_transform,
)
from hrformer.evaluation.segmentation import SegmentationMetrics
from tests.conftest import SHARED
from tests.evaluation.test_seg_metrics import numpy_reference

CITY = SHARED / "data" / "cityscapes_tiny"
CITY_STEM = "frankfurt_000000_000294"
CITY_LABEL_IDS = CITY / "gtFine" / "val" / "frankfurt" / f"{CITY_STEM}_gtFine_labelIds.png"
CITY_TRAIN_IDS = CITY / "gtFine" / "val" / "frankfurt" / f"{CITY_STEM}_gtFine_labelTrainIds.png"
CITY_IMAGE = CITY / "leftImg8bit" / "val" / "frankfurt" / f"{CITY_STEM}_leftImg8bit.png"
ADE = SHARED / "data" / "ade20k_tiny"
ADE_LABEL = ADE / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png"

# cityscapesScripts labels.py, written out independently of the package: (labelId, trainId) of the 19 classes
OFFICIAL_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                      26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def cityscapes(root: Path = CITY, **kwargs) -> CityscapesDataModule:
    kwargs = {"num_classes": 19, "class_names": [f"c{i}" for i in range(19)], "train_split": "val",
              "val_split": "val", "crop_size": (64, 64), "num_workers": 0, "batch_size": 1, **kwargs}
    return CityscapesDataModule(str(root), **kwargs)


def ade20k(root: Path = ADE, **kwargs) -> ADE20KDataModule:
    kwargs = {"num_classes": 150, "class_names": [f"c{i}" for i in range(150)], "train_split": "training",
              "val_split": "training", "crop_size": (64, 64), "num_workers": 0, **kwargs}
    return ADE20KDataModule(str(root), **kwargs)


def val_sample(dm):
    dm.setup("validate")
    return dm.val_set[0]


def independent_train_ids(label_ids: np.ndarray) -> np.ndarray:
    out = np.full(label_ids.shape, 255, dtype=np.uint8)
    for lid, tid in OFFICIAL_TRAIN_IDS.items():
        out[label_ids == lid] = tid
    return out


# ------------------------------------------------------------------------------------------------ real data
def test_cityscapes_label_ids_to_train_ids():
    sample = val_sample(cityscapes())
    label = sample["label"].numpy()
    label_ids = cv2.imread(str(CITY_LABEL_IDS), cv2.IMREAD_UNCHANGED)
    assert label.shape == label_ids.shape == (128, 256)
    assert np.array_equal(label, independent_train_ids(label_ids))
    assert set(np.unique(label)) == {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}
    shipped = cv2.imread(str(CITY_TRAIN_IDS), cv2.IMREAD_UNCHANGED)  # resized separately upstream
    assert (label == shipped).mean() > 0.99
    image = sample["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    rgb = cv2.cvtColor(cv2.imread(str(CITY_IMAGE)), cv2.COLOR_BGR2RGB) / 255.0
    assert np.abs(image - rgb).max() < 1e-5


def test_ade20k_reduces_zero_label():
    sample = val_sample(ade20k())
    raw = cv2.imread(str(ADE_LABEL), cv2.IMREAD_UNCHANGED)
    label = sample["label"].numpy()
    assert label.shape == raw.shape == (512, 683) and sample["image"].shape == (3, 512, 683)
    assert np.array_equal(label == 255, raw == 0)
    assert np.array_equal(label[raw > 0], raw[raw > 0] - 1)
    assert set(np.unique(label)) == {0, 1, 2, 4, 6, 9, 17, 255}  # wall building sky tree road grass plant


def test_ade20k_validation_resize_keeps_label_resolution():
    sample = val_sample(ade20k(val_base_size=200))
    assert sample["image"].shape == (3, 150, 200) and sample["label"].shape == (512, 683)


@pytest.mark.parametrize("make", [cityscapes, ade20k])
def test_ground_truth_as_prediction_and_perturbed_prediction(make):
    dm = make()
    label = val_sample(dm)["label"].long()
    c = dm.num_classes
    perfect = SegmentationMetrics(num_classes=c)
    perfect.update(torch.where(label == 255, 0, label), label)
    result = perfect.compute()
    assert result["mIoU"] == result["mAcc"] == result["aAcc"] == 1.0

    rng = np.random.default_rng(0)
    gt = label.numpy()
    pred = np.where(gt == 255, 0, gt)
    flip = rng.random(gt.shape) < 0.15
    pred[flip] = rng.choice(np.unique(gt[gt != 255]), flip.sum())       # confusions among present classes
    pred[:20, :40] = c - 1                                               # a false-positive class
    pred = np.roll(pred, 3, axis=1)                                      # boundary errors
    metric = SegmentationMetrics(num_classes=c)
    metric.update(torch.from_numpy(pred), label)
    ours, ref = metric.compute(), numpy_reference([pred], [gt], c)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12)
    assert 0.2 < ours["mIoU"] < 0.99
    assert np.isfinite(ours["IoU"]).sum() == ref["n_iou"] and np.isfinite(ours["Acc"]).sum() == ref["n_acc"]


# ------------------------------------------------------------------------------------------------ augmentation
def test_training_crop_padding_and_label_values():
    dm = cityscapes(crop_size=(96, 320), scale_range=(0.5, 0.5), augmentation={"photometric_prob": 0})
    dm.setup("fit")
    torch.manual_seed(0)
    sample = dm.train_set[0]
    assert sample["image"].shape == (3, 96, 320) and sample["label"].shape == (96, 320)
    label = sample["label"].numpy()
    # the half-size image is 64x128: the rest of the 96x320 crop is ignore padding
    assert (label != 255).sum() <= 64 * 128 and (label == 255).sum() >= 96 * 320 - 64 * 128
    assert set(np.unique(label)) <= {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}


def test_training_augmentation_keeps_image_and_label_aligned():
    """An image whose colour encodes its label: after rescale, crop and flip, colours still give the labels."""
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 6, (12, 20)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)  # 96x160
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]],
                      np.uint8)
    image = colors[label]
    transform = train_transform((64, 64), (0.5, 2.0), photometric_prob=0.0)
    for seed in range(10):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = transform(image=image, mask=label)
        img, lbl = out["image"].astype(np.int64), out["mask"]
        valid = lbl != 255
        # pixels away from label boundaries (image colours are blended across them by the bilinear resize)
        interior = valid & (cv2.erode(lbl, np.ones((3, 3), np.uint8)) == cv2.dilate(lbl, np.ones((3, 3), np.uint8)))
        nearest = np.argmin(((img[..., None, :] - colors[None, None].astype(np.int64)) ** 2).sum(-1), -1)
        assert interior.sum() > 1000 and (nearest[interior] == lbl[interior]).all()
        assert (img[~valid] == 0).all()  # padding: black image, ignore label


def test_flip_mirrors_image_and_label():
    dm = cityscapes(crop_size=(128, 256), scale_range=(1.0, 1.0), augmentation={"flip_prob": 1.0,
                                                                                "photometric_prob": 0})
    dm.setup("fit")
    sample = dm.train_set[0]
    label_ids = cv2.imread(str(CITY_LABEL_IDS), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(sample["label"].numpy(), independent_train_ids(label_ids)[:, ::-1])


def test_unknown_augmentation_option_is_refused():
    with pytest.raises(ValueError, match="rotation_factor.*task=seg data="):
        cityscapes(augmentation={"rotation_factor": 30.0})


def test_collate_pads_images_and_labels():
    a = {"image": torch.ones(3, 4, 5), "label": torch.zeros(4, 5, dtype=torch.uint8), "name": "a"}
    b = {"image": torch.ones(3, 6, 3), "label": torch.ones(8, 3, dtype=torch.uint8), "name": "b"}
    batch = seg_collate([a, b])
    assert batch["image"].shape == (2, 3, 6, 5) and batch["label"].shape == (2, 8, 5)
    assert batch["image"][0, :, 4:].abs().sum() == 0 and (batch["label"][0, 4:] == 255).all()
    assert (batch["label"][1, :, 3:] == 255).all() and (batch["label"][1, :, :3] == 1).all()
    assert batch["image_hw"].tolist() == [[4, 5], [6, 3]] and batch["label_hw"].tolist() == [[4, 5], [8, 3]]


@pytest.mark.parametrize("n,world", [(7, 2), (7, 3), (2, 4)])
def test_unpadded_sampler_takes_every_sample_once(n, world):
    seen = [i for r in range(world) for i in UnpaddedDistributedSampler(range(n), num_replicas=world, rank=r)]
    assert sorted(seen) == list(range(n))
    assert sum(len(UnpaddedDistributedSampler(range(n), num_replicas=world, rank=r)) for r in range(world)) == n


# ------------------------------------------------------------------------------------------------ other layouts
def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_coco_stuff_maps_182_ids_to_171_classes(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    raw = np.array([[0, 10, 12, 181, 255, 91, 24, 26]] * 8, np.uint8)
    _write_png(tmp_path / "images" / "val2017" / "000000000001.jpg", image)
    _write_png(tmp_path / "annotations" / "val2017" / "000000000001.png", raw)
    dm = COCOStuffDataModule(str(tmp_path), 171, [f"c{i}" for i in range(171)], val_split="val2017")
    label = val_sample(dm)["label"].numpy()[0]
    assert label.tolist() == [0, 10, 11, 170, 255, 80, 23, 24]
    raw[0, 0] = 11  # a COCO id that was never used
    _write_png(tmp_path / "annotations" / "val2017" / "000000000001.png", raw)
    with pytest.raises(ValueError, match=r"000000000001\.png.*\[11\]"):
        dm.val_set[0]


def test_pascal_context_list_file_and_reduced_zero_label(tmp_path, caplog):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    _write_png(base / "JPEGImages" / "2008_000002.jpg", np.zeros((6, 6, 3), np.uint8))
    _write_png(base / "SegmentationClassContext" / "2008_000002.png", np.array([[0, 1, 59] * 2] * 6, np.uint8))
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n2008_000003\n")
    dm = PascalContextDataModule(str(tmp_path), 59, [f"c{i}" for i in range(59)])
    with caplog.at_level(logging.WARNING):
        label = val_sample(dm)["label"].numpy()
    assert label[0].tolist() == [255, 0, 58] * 2 and len(dm.val_set) == 1
    assert "skipped 1 ids of val.txt without an image" in caplog.text and "2008_000003" in caplog.text


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def city_copy(tmp_path) -> Path:
    root = tmp_path / "cityscapes"
    shutil.copytree(CITY, root)
    return root


def _city_files(root: Path, stem: str = CITY_STEM) -> tuple[Path, Path]:
    return (root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png",
            root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png")


def test_missing_partners_are_skipped_and_logged(city_copy, caplog):
    image, label = _city_files(city_copy)
    shutil.copy(image, _city_files(city_copy, "frankfurt_000000_000576")[0])   # an image without label
    shutil.copy(label, _city_files(city_copy, "frankfurt_000001_000001")[1])   # a label without image
    with caplog.at_level(logging.WARNING):
        dm = cityscapes(city_copy)
        dm.setup("validate")
    assert len(dm.val_set) == 1
    assert "skipped 1 images without a label file" in caplog.text and "frankfurt_000000_000576" in caplog.text
    assert "skipped 1 label files without an image" in caplog.text and "frankfurt_000001_000001" in caplog.text


def test_no_pairs_is_an_error_naming_the_root(city_copy):
    _city_files(city_copy)[1].unlink()
    with pytest.raises(FileNotFoundError, match=f"split 'val' under {city_copy}"):
        cityscapes(city_copy).setup("validate")


def test_image_and_label_of_different_size(city_copy):
    image, label = _city_files(city_copy)
    _write_png(image, cv2.imread(str(image))[:100])
    dm = cityscapes(city_copy)
    dm.setup("validate")
    with pytest.raises(ValueError, match=rf"{image.name} is 256x100 but its label map .*{label.name} is 256x128"):
        dm.val_set[0]


def test_label_values_outside_the_range(city_copy):
    _, label = _city_files(city_copy)
    raw = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    raw[0, :3] = 255  # the ignore label is always accepted
    _write_png(label, raw)
    dm = cityscapes(city_copy)
    dm.setup("validate")
    assert (dm.val_set[0]["label"][0, :3] == 255).all()
    raw[5, 5], raw[6, 6] = 40, 34
    _write_png(label, raw)
    with pytest.raises(ValueError, match=rf"{label}.*\[34, 40\].*0-33, 255"):
        dm.val_set[0]


def test_unreadable_files_are_named(city_copy):
    image, label = _city_files(city_copy)
    dm = cityscapes(city_copy)
    dm.setup("validate")
    label.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(OSError, match=rf"cannot read label map {label}"):
        dm.val_set[0]
    image.write_bytes(b"not an image")
    with pytest.raises(OSError, match=rf"cannot read image {image}"):
        dm.val_set[0]


def test_colour_label_map_is_refused(city_copy):
    _, label = _city_files(city_copy)
    raw = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    _write_png(label, np.stack([raw] * 3, -1))
    dm = cityscapes(city_copy)
    dm.setup("validate")
    with pytest.raises(ValueError, match=rf"{label} has 3 channels"):
        dm.val_set[0]


def test_error_in_a_worker_names_the_file(city_copy):
    image, _ = _city_files(city_copy)
    image.write_bytes(b"not an image")
    dm = cityscapes(city_copy, num_workers=1)
    dm.setup("validate")
    with pytest.raises(OSError, match=str(image)):
        next(iter(dm.val_dataloader()))

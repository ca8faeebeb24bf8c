"""ImageFolder datamodule: real photos (../shared/data/imagefolder_tiny), transforms, and each kind of bad input."""

from __future__ import annotations

import logging
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hrformer.data.cls_transforms import build_train_transform, build_val_transform
from hrformer.data.common import IMAGENET_MEAN, IMAGENET_STD, read_rgb
from hrformer.data.imagefolder import ImageFolderDataModule, ImageFolderDataset
from hrformer.visualize import denormalize
from tests.conftest import SHARED

TINY = SHARED / "data" / "imagefolder_tiny"
TINY_CLASSES = ["bird", "cat", "dog", "snake"]


def pil_val_reference(path, size: int = 224, crop_ratio: float = 0.875) -> np.ndarray:
    """The official (timm/torchvision, PIL) evaluation crop: bicubic shorter side to 256, centre 224."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    short = int(size / crop_ratio)
    nw, nh = (short, round(short * h / w)) if w <= h else (round(short * w / h), short)
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))


def test_tiny_real_data_classes_in_sorted_order():
    dataset = ImageFolderDataset(TINY, transform=build_val_transform(224))
    assert dataset.classes == TINY_CLASSES and dataset.class_to_idx == {c: i for i, c in enumerate(TINY_CLASSES)}
    assert len(dataset) == 5
    for path, label in dataset.samples:  # each file carries the index of its folder
        assert TINY_CLASSES[label] == path.split("/")[-2]
    assert sorted(dataset.targets) == [0, 1, 1, 2, 3]


def test_validation_tensors_are_224_normalised_crops_of_the_photos():
    dataset = ImageFolderDataset(TINY, transform=build_val_transform(224, 0.875))
    for i, (path, _) in enumerate(dataset.samples):
        sample = dataset[i]
        image = sample["image"]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        reference = pil_val_reference(path)
        # normalised with the ImageNet statistics: undoing them gives the PIL pipeline's crop (bicubic kernels differ)
        assert np.abs(denormalize(image).astype(int) - reference.astype(int)).mean() < 4.0
        expected = (reference.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        assert abs(image.mean().item() - expected.mean()) < 0.03
        assert sample["path"] == os.path.relpath(path, TINY)


def test_training_augmentation_is_random_and_reproducible_by_seed():
    transform = build_train_transform(224, rand_augment={"num_ops": 2, "magnitude": 9, "magnitude_std": 0.5})
    dataset = ImageFolderDataset(TINY, transform=transform, random_erasing=0.25, train=True)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(torch.stack([dataset[1]["image"] for _ in range(3)]))
    assert draws[0].shape == (3, 3, 224, 224)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    assert not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0][0], draws[0][1])


def test_datamodule_loads_the_tiny_set_end_to_end():
    dm = ImageFolderDataModule(str(TINY), num_classes=4, train_dir=".", val_dir=".", batch_size=2,
                               val_batch_size=5, num_workers=0, train_size=96, val_size=96)
    dm.setup("fit")
    assert dm.class_names == TINY_CLASSES
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (5, 3, 96, 96) and batch["label"].tolist() == [0, 1, 1, 2, 3]
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 96, 96)
    with pytest.raises(ValueError, match="has 4 class folders but the model predicts 10"):
        ImageFolderDataModule(str(TINY), num_classes=10, train_dir=".", val_dir=".").setup("fit")


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def messy(tmp_path):
    """The tiny set plus an empty class, stray non-image files and two broken 'images'."""
    root = tmp_path / "messy"
    shutil.copytree(TINY, root)
    root.chmod(0o755)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    (root / "empty_class").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0")
    (root / "dog" / "garbage.jpg").write_bytes(b"this is not a JPEG at all")
    (root / "snake" / "zero.png").write_bytes(b"")
    return root


def test_bad_files_are_skipped_with_counts_or_named(messy, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(messy, transform=build_val_transform(64))
    assert dataset.classes == ["bird", "cat", "dog", "empty_class", "snake"]  # the empty class keeps its index
    assert dataset.report.empty_classes == ["empty_class"]
    assert dataset.report.skipped == {"not an image file (extension)": 2}
    assert "empty_class" in caplog.text and "not an image file" in caplog.text
    assert len(dataset) == 7 and sorted(set(dataset.targets)) == [0, 1, 2, 4]
    bad = [i for i, (p, _) in enumerate(dataset.samples) if p.endswith(("garbage.jpg", "zero.png"))]
    assert len(bad) == 2
    for i in bad:
        with pytest.raises(OSError, match=r"cannot read image .*(garbage\.jpg|zero\.png)"):
            dataset[i]


def test_check_images_skips_unreadable_files_with_a_logged_count(messy, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderDataset(messy, transform=build_val_transform(64), check_images=True)
    assert dataset.report.skipped["unreadable image"] == 2
    assert "garbage.jpg" in caplog.text and "zero.png" in caplog.text
    assert len(dataset) == 5 and all(dataset[i]["image"].shape == (3, 64, 64) for i in range(5))


def test_an_unreadable_file_in_a_worker_names_the_file(messy):
    dataset = ImageFolderDataset(messy, transform=build_val_transform(64))
    loader = DataLoader(dataset, batch_size=len(dataset), num_workers=1)
    with pytest.raises(OSError, match=r"garbage\.jpg|zero\.png"):
        next(iter(loader))


def test_missing_or_inconsistent_splits_are_clear_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(ValueError, match=r"no images found in .*train"):
        ImageFolderDataset(tmp_path / "train")
    cv2.imwrite(str(tmp_path / "train" / "a" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "val" / "c").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "val" / "c" / "y.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"class folders the training split does not have: \['c'\]"):
        ImageFolderDataset(tmp_path / "val", classes=["a", "b"])
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolderDataset(tmp_path / "nope")


def test_grayscale_rgba_16bit_and_cmyk_images_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_rgb(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=-1))

    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgba[..., :3])  # as PIL's convert("RGB")

    deep = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])
    np.testing.assert_array_equal(read_rgb(tmp_path / "deep.png"), (deep >> 8).astype(np.uint8))

    cmyk = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB").convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    reference = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB")).astype(int)
    ours = read_rgb(tmp_path / "cmyk.jpg")
    assert ours.shape == (20, 30, 3) and np.abs(ours.astype(int) - reference).mean() < 2.0

    palette = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB").convert("P")
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "palette.png"),
                                  np.asarray(Image.open(tmp_path / "palette.png").convert("RGB")))

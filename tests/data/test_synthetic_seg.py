"""The synthetic Cityscapes-layout segmentation set: layout, determinism, regeneration rules, config agreement."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from hrformer.data.segmentation import CityscapesDataModule
from hrformer.data.synthetic.cityscapes_seg import (
    CLASS_NAMES,
    LABEL_MAP,
    UNLABELED,
    ensure_synthetic_cityscapes_seg,
    generate_cityscapes_seg,
    render_scene,
)
from hrformer.utils.paths import CONFIG_DIR

SMALL = dict(num_train=4, num_val=2, image_size=(64, 48), seed=3)


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_layout_and_label_values(tmp_path):
    root = generate_cityscapes_seg(tmp_path / "syn", **SMALL)
    images = sorted((root / "leftImg8bit").rglob("*_leftImg8bit.png"))
    labels = sorted((root / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(images) == len(labels) == 6
    assert {p.parent.parent.name for p in images} == {"train", "val"}
    for img, lbl in zip(images, labels, strict=True):
        assert img.name.replace("_leftImg8bit", "") == lbl.name.replace("_gtFine_labelIds", "")
        image, label = cv2.imread(str(img), cv2.IMREAD_UNCHANGED), cv2.imread(str(lbl), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 64, 3) and label.shape == (48, 64) and label.dtype == np.uint8
        assert label.max() <= len(CLASS_NAMES)
    assert json.loads((root / ".synthetic.json").read_text())["num_train"] == 4
    assert not list(root.rglob("*.tmp")) and not (root / ".synthetic.partial.json").exists()


def test_every_class_and_ignore_regions_occur():
    counts = np.zeros(len(CLASS_NAMES) + 1)
    for i in range(20):
        _, label = render_scene(np.random.default_rng(i), 128, 64)
        counts += np.bincount(label.reshape(-1), minlength=len(counts))
    assert (counts > 0).all()
    assert 0.0 < counts[UNLABELED] / counts.sum() < 0.2


def test_deterministic_by_seed(tmp_path):
    a = digest(generate_cityscapes_seg(tmp_path / "a", **SMALL))
    b = digest(generate_cityscapes_seg(tmp_path / "b", **SMALL))
    c = digest(generate_cityscapes_seg(tmp_path / "c", **{**SMALL, "seed": 4}))
    assert a == b
    assert all(a[k] != c[k] for k in a)


def test_ensure_reuses_a_complete_set_and_redoes_an_interrupted_one(tmp_path):
    root = tmp_path / "syn"
    ensure_synthetic_cityscapes_seg(root, **SMALL)
    first = next((root / "leftImg8bit" / "train").rglob("*.png"))
    mtime = first.stat().st_mtime_ns
    ensure_synthetic_cityscapes_seg(root, **SMALL)
    assert first.stat().st_mtime_ns == mtime  # complete, same parameters: untouched
    (root / ".synthetic.partial.json").write_text((root / ".synthetic.json").read_text())
    first.unlink()
    ensure_synthetic_cityscapes_seg(root, **SMALL)
    assert first.is_file() and not (root / ".synthetic.partial.json").exists()
    ensure_synthetic_cityscapes_seg(root, **{**SMALL, "num_train": 2})  # new parameters: old files removed
    assert len(list((root / "leftImg8bit" / "train").rglob("*.png"))) == 2


def test_refuses_to_overwrite_a_real_dataset(tmp_path):
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_cityscapes_seg(tmp_path, **SMALL)


def test_config_matches_the_generator_and_the_datamodule_reads_it(tmp_path):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "cityscapes_synthetic.yaml")
    assert list(cfg.class_names) == list(CLASS_NAMES) and cfg.num_classes == len(CLASS_NAMES)
    assert {int(k): int(v) for k, v in cfg.label_map.items()} == LABEL_MAP
    root = generate_cityscapes_seg(tmp_path / "syn", **SMALL)
    dm = CityscapesDataModule(str(root), len(CLASS_NAMES), CLASS_NAMES, label_map=LABEL_MAP, num_workers=0)
    dm.setup("validate")
    raw = cv2.imread(str(dm.val_set.samples[0].label), cv2.IMREAD_UNCHANGED)
    label = dm.val_set[0]["label"].numpy()
    assert np.array_equal(label == 255, raw == UNLABELED)
    assert np.array_equal(label[raw != UNLABELED], raw[raw != UNLABELED] - 1)

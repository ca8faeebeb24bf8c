"""Classification transforms: RandAugment ops against PIL (what the official timm pipeline runs), random erasing,
and the validation resize/crop geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from hrformer.data.cls_transforms import (
    RAND_AUGMENT_OPS,
    RandAugment,
    build_train_transform,
    build_val_transform,
    random_erasing,
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(20, 230, (6, 8, 3)).astype(np.float32)
    import cv2

    return np.clip(cv2.resize(base, (64, 48), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


# (our op, level, sign) -> what PIL / timm does for that magnitude
PIL_REFERENCES = {
    "AutoContrast": (1.0, 1.0, lambda im: ImageOps.autocontrast(im)),
    "Invert": (1.0, 1.0, lambda im: ImageOps.invert(im)),
    "PosterizeIncreasing": (0.9, 1.0, lambda im: ImageOps.posterize(im, 1)),  # 4 - int(0.9 * 4) bits
    "SolarizeIncreasing": (0.5, 1.0, lambda im: ImageOps.solarize(im, 128)),  # 256 - 0.5 * 256
    "ColorIncreasing": (0.5, -1.0, lambda im: ImageEnhance.Color(im).enhance(1 - 0.45)),
    "ContrastIncreasing": (0.5, 1.0, lambda im: ImageEnhance.Contrast(im).enhance(1 + 0.45)),
    "BrightnessIncreasing": (0.9, 1.0, lambda im: ImageEnhance.Brightness(im).enhance(1 + 0.81)),
    "SharpnessIncreasing": (0.9, 1.0, lambda im: ImageEnhance.Sharpness(im).enhance(1 + 0.81)),
}


@pytest.mark.parametrize("name", sorted(PIL_REFERENCES))
def test_rand_augment_ops_match_pil(image, name):
    level, sign, reference = PIL_REFERENCES[name]
    ours = RAND_AUGMENT_OPS[name](image, level, sign)
    expected = np.asarray(reference(Image.fromarray(image)))
    assert ours.dtype == np.uint8 and ours.shape == image.shape
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 2


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
def test_geometric_ops_are_identity_at_level_zero_and_move_pixels_otherwise(image, name):
    op = RAND_AUGMENT_OPS[name]
    assert np.abs(op(image, 0.0, 1.0).astype(int) - image.astype(int)).max() <= 1
    assert np.abs(op(image, 1.0, 1.0).astype(int) - image.astype(int)).mean() > 5


def test_rand_augment_applies_about_num_ops_times_op_prob_ops():
    ra = RandAugment(num_ops=2, magnitude=9, magnitude_std=0.5, op_prob=0.5)
    ra.set_random_seed(0)
    drawn = [ra.get_params()["chosen"] for _ in range(2000)]
    assert abs(np.mean([len(c) for c in drawn]) - 1.0) < 0.07
    levels = np.array([lv for c in drawn for _, lv, _ in c])
    assert abs(levels.mean() - 0.9) < 0.01 and levels.max() <= 1.0 and 0.04 < levels.std() < 0.06
    assert len({n for c in drawn for n, _, _ in c}) == len(RAND_AUGMENT_OPS)
    with pytest.raises(ValueError, match="unknown RandAugment ops"):
        RandAugment(ops=["Rotate", "Wobble"])


def test_random_erasing_fills_one_rectangle_with_noise():
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(200):
        tensor = torch.full((3, 40, 60), 7.0)
        random_erasing(tensor, rng, prob=1.0)
        erased = (tensor != 7.0).all(0)
        fractions.append(erased.float().mean().item())
        rows, cols = torch.nonzero(erased, as_tuple=True)
        box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # one solid rectangle
        assert abs(tensor[:, erased].mean().item()) < 0.5 and 0.5 < tensor[:, erased].std().item() < 1.5
    assert 0.015 < min(fractions) and max(fractions) < 0.36
    assert abs(np.mean(fractions) - (0.02 + 1 / 3) / 2) < 0.03
    untouched = torch.full((3, 40, 60), 7.0)
    assert torch.equal(random_erasing(untouched, rng, prob=0.0), torch.full((3, 40, 60), 7.0))


def test_validation_resizes_the_short_side_to_256_then_crops_224():
    tall = np.zeros((500, 300, 3), np.uint8)
    tall[:, :, 0] = np.arange(500, dtype=np.uint8)[:, None] // 2  # rows encode their position
    out = build_val_transform(224, 0.875)(image=tall)["image"]
    assert out.shape == (224, 224, 3)
    # the short side goes 300 -> 256 (x 0.8533): the centre 224 rows span input rows ~119-381
    assert abs(out[0, :, 0].mean() - (500 - 224 / (256 / 300)) / 2 / 2) < 2
    assert build_train_transform(224)(image=tall)["image"].shape == (224, 224, 3)

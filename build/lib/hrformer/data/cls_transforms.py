"""Image-classification transforms (albumentations + NumPy), as in the DeiT/Swin recipe of the official HRFormer code.

Training (timm ``create_transform(is_training=True)`` as configured by the official cls code)::

    RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3), bicubic) -> HorizontalFlip(0.5)
    -> RandAugment (``rand-m9-mstd0.5-inc1``: 2 ops, each applied with p 0.5, magnitude ~ N(9, 0.5))
    -> ColorJitter (timm applies it only when no RandAugment policy is set) -> normalise
    -> RandomErasing (p 0.25, per-pixel normal noise, on the normalised tensor)

Validation: resize the shorter side to ``int(size / crop_ratio)`` (bicubic; 256 for 224 at 0.875), centre crop
``size`` x ``size``, normalise.  Images are RGB ``uint8`` ``(H, W, 3)``; the network input is a float32
``(3, size, size)`` tensor normalised with the ImageNet mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

__all__ = ["RandAugment", "random_erasing", "build_train_transform", "build_val_transform", "INTERPOLATIONS"]

INTERPOLATIONS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
                  "area": cv2.INTER_AREA}
FILL = (124, 116, 104)  # timm's fill colour for geometric RandAugment ops (the ImageNet mean, 0-255)
_MAX_LEVEL = 10.0


# ---- RandAugment ops (timm's "increasing" set): uint8 RGB in, uint8 RGB out; level in [0, 1]
def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    """PIL ImageEnhance: other + factor * (image - other), clipped to uint8."""
    out = np.asarray(other, np.float32) + factor * (image.astype(np.float32) - np.asarray(other, np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=FILL)


def _auto_contrast(image, level, sign):
    lo = image.reshape(-1, 3).min(0).astype(np.float32)
    hi = image.reshape(-1, 3).max(0).astype(np.float32)
    scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1), 1.0)
    offset = np.where(hi > lo, lo, 0.0)
    return np.clip(np.rint((image - offset) * scale), 0, 255).astype(np.uint8)


def _equalize(image, level, sign):
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)], axis=-1)


def _invert(image, level, sign):
    return 255 - image


def _rotate(image, level, sign):
    h, w = image.shape[:2]
    return _affine(image, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), sign * 30.0 * level, 1.0))


def _posterize(image, level, sign):
    bits = 4 - int(level * 4)
    return image & np.uint8((0xFF << (8 - bits)) & 0xFF)


def _solarize(image, level, sign):
    threshold = 256 - level * 256
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def _solarize_add(image, level, sign):
    add = int(level * 110)
    return np.where(image < 128, np.minimum(image.astype(np.int16) + add, 255), image).astype(np.uint8)


def _color(image, level, sign):
    return _blend(image, np.repeat(_gray(image)[..., None], 3, axis=-1), 1.0 + sign * 0.9 * level)


def _contrast(image, level, sign):
    return _blend(image, float(_gray(image).mean()), 1.0 + sign * 0.9 * level)


def _brightness(image, level, sign):
    return _blend(image, 0.0, 1.0 + sign * 0.9 * level)


def _sharpness(image, level, sign):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0  # PIL ImageFilter.SMOOTH
    smooth = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = image[0], image[-1], image[:, 0], image[:, -1]
    return _blend(image, smooth, 1.0 + sign * 0.9 * level)


def _shear_x(image, level, sign):
    return _affine(image, np.array([[1.0, sign * 0.3 * level, 0.0], [0.0, 1.0, 0.0]]))


def _shear_y(image, level, sign):
    return _affine(image, np.array([[1.0, 0.0, 0.0], [sign * 0.3 * level, 1.0, 0.0]]))


def _translate_x(image, level, sign):
    return _affine(image, np.array([[1.0, 0.0, sign * 0.45 * level * image.shape[1]], [0.0, 1.0, 0.0]]))


def _translate_y(image, level, sign):
    return _affine(image, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, sign * 0.45 * level * image.shape[0]]]))


RAND_AUGMENT_OPS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "AutoContrast": _auto_contrast, "Equalize": _equalize, "Invert": _invert, "Rotate": _rotate,
    "PosterizeIncreasing": _posterize, "SolarizeIncreasing": _solarize, "SolarizeAdd": _solarize_add,
    "ColorIncreasing": _color, "ContrastIncreasing": _contrast, "BrightnessIncreasing": _brightness,
    "SharpnessIncreasing": _sharpness, "ShearX": _shear_x, "ShearY": _shear_y, "TranslateXRel": _translate_x,
    "TranslateYRel": _translate_y,
}


class RandAugment(A.ImageOnlyTransform):
    """timm's ``rand-m{magnitude}-mstd{magnitude_std}-inc1`` policy as an albumentations transform.

    ``num_ops`` ops are drawn uniformly with replacement from :data:`RAND_AUGMENT_OPS`; each is applied with
    probability ``op_prob`` at a magnitude drawn from N(``magnitude``, ``magnitude_std``) clipped to [0, 10]
    (level = magnitude / 10; rotation up to 30 degrees, shear 0.3, translation 0.45 of the side, enhancement
    factors 1 +- 0.9 level with a random sign; posterize keeps ``4 - int(4 level)`` bits, solarize inverts
    values >= ``256 (1 - level)``).  Geometric ops fill with the ImageNet mean colour.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5, op_prob: float = 0.5,
                 ops: Sequence[str] | None = None, p: float = 1.0):
        super().__init__(p=p)
        self.num_ops, self.magnitude, self.magnitude_std, self.op_prob = int(num_ops), magnitude, magnitude_std, op_prob
        self.ops = list(ops) if ops is not None else list(RAND_AUGMENT_OPS)
        unknown = set(self.ops) - set(RAND_AUGMENT_OPS)
        if unknown:
            raise ValueError(f"unknown RandAugment ops {sorted(unknown)}; known: {sorted(RAND_AUGMENT_OPS)}")

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        chosen = []
        for _ in range(self.num_ops):
            name = self.ops[int(rng.integers(len(self.ops)))]
            if rng.random() >= self.op_prob:
                continue
            m = self.magnitude if self.magnitude_std <= 0 else rng.normal(self.magnitude, self.magnitude_std)
            level = float(np.clip(m, 0.0, _MAX_LEVEL)) / _MAX_LEVEL
            chosen.append((name, level, 1.0 if rng.random() < 0.5 else -1.0))
        return {"chosen": chosen}

    def apply(self, img: np.ndarray, chosen: Sequence[tuple[str, float, float]] = (), **params) -> np.ndarray:
        for name, level, sign in chosen:
            img = RAND_AUGMENT_OPS[name](img, level, sign)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_ops", "magnitude", "magnitude_std", "op_prob", "ops")


def random_erasing(tensor: torch.Tensor, rng: np.random.Generator, prob: float = 0.25, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: float | None = None) -> torch.Tensor:
    """timm ``RandomErasing(mode="pixel", max_count=1)`` on a normalised (3, H, W) tensor, in place.

    With probability ``prob`` one rectangle of area fraction U(``min_area``, ``max_area``) and aspect ratio
    log-uniform in [``min_aspect``, ``max_aspect``] (default ``1 / min_aspect``) is filled with N(0, 1) noise per
    pixel and channel (10 attempts to fit it into the image, as timm).
    """
    if rng.random() >= prob:
        return tensor
    _, h, w = tensor.shape
    log_ratio = (math.log(min_aspect), math.log(max_aspect or 1.0 / min_aspect))
    for _ in range(10):
        target = rng.uniform(min_area, max_area) * h * w
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            noise = rng.standard_normal((tensor.shape[0], eh, ew)).astype(np.float32)
            tensor[:, top:top + eh, left:left + ew] = torch.from_numpy(noise).to(tensor.dtype)
            break
    return tensor


def build_train_transform(size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                          interpolation: str = "bicubic", flip_prob: float = 0.5, rand_augment: dict | None = None,
                          color_jitter: float = 0.0) -> A.Compose:
    """The geometric and photometric part of the training pipeline (uint8 RGB in, ``size`` x ``size`` uint8 out).

    ``rand_augment``: keyword arguments of :class:`RandAugment` (None: off).  ``color_jitter``: brightness,
    contrast and saturation factor range 1 +- ``color_jitter`` (0: off).  Normalisation and random erasing follow
    in the dataset (:func:`~hrformer.data.common.to_normalized_tensor`, :func:`random_erasing`).
    """
    transforms: list = [
        A.RandomResizedCrop(size=(int(size), int(size)), scale=tuple(scale), ratio=tuple(ratio),
                            interpolation=INTERPOLATIONS[interpolation]),
    ]
    if flip_prob > 0:
        transforms.append(A.HorizontalFlip(p=flip_prob))
    if rand_augment:
        transforms.append(RandAugment(**rand_augment))
    if color_jitter > 0:
        cj = float(color_jitter)
        transforms.append(A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=0.0, p=1.0))
    return A.Compose(transforms)


def build_val_transform(size: int, crop_ratio: float = 0.875, interpolation: str = "bicubic") -> A.Compose:
    """Resize the shorter side to ``int(size / crop_ratio)``, then the centre ``size`` x ``size`` crop."""
    resize = int(math.floor(size / crop_ratio))
    return A.Compose([A.SmallestMaxSize(max_size=resize, interpolation=INTERPOLATIONS[interpolation]),
                      A.CenterCrop(int(size), int(size))])

"""A synthetic ImageFolder classification set: shapes and textures with nuisance variation.

Layout under ``root`` (the ImageNet / ImageFolder layout)::

    train/<class>/<class>_00000.jpg ...
    val/<class>/<class>_00000.jpg ...
    .synthetic.json            # marker with the generation parameters, written last

Eight classes (:data:`CLASSES`), chosen to stay distinct at the small crops a CPU run can afford (squares and
five-point stars were confused with circles and crosses at 48 px long after everything else was learnt):

- four shapes, one per image: ``circle``, ``cross``, ``ring``, ``triangle``, drawn at a random
  size (50-85 % of the image side), position, rotation and aspect (0.9-1.1), filled with a solid colour or a
  linear gradient, sometimes outlined, on a smooth background (two-colour gradient plus low-frequency blotches);
- four textures covering the image: ``checkerboard``, ``dots``, ``grid`` (crossed lines) and ``stripes``, at a
  random period, phase, orientation and pair of colours.

Nuisances shared by all classes (so that none of them tells the class): colours (with a minimum contrast
between figure and ground), 0-2 thin scribbles, an illumination gradient, Gaussian blur, pixel noise and JPEG
compression.  Images are square (``image_size``), RGB, deterministic by ``seed`` (each image has its own
``SeedSequence([seed, split, class, index])``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from . import common

__all__ = ["CLASSES", "SHAPES", "TEXTURES", "render", "generate_imagefolder", "ensure_synthetic_imagefolder"]

GENERATOR_VERSION = 3
SPLITS = ("train", "val")
JPEG_QUALITY = 90
SHAPES = ("circle", "cross", "ring", "triangle")
TEXTURES = ("checkerboard", "dots", "grid", "stripes")
CLASSES = tuple(sorted(SHAPES + TEXTURES))
_SS = 4  # supersampling factor for anti-aliased shapes


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _contrasting(rng: np.random.Generator, other: np.ndarray, min_dist: float = 140.0) -> np.ndarray:
    """A random colour at least ``min_dist`` (RGB Euclidean) away from ``other``."""
    for _ in range(100):
        c = _color(rng)
        if np.linalg.norm(c - other) >= min_dist:
            return c
    return 255.0 - other


def _gradient(rng: np.random.Generator, s: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """(s, s, 3) float linear gradient from c0 to c1 along a random direction."""
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    t = (math.cos(a) * (xx - 0.5) + math.sin(a) * (yy - 0.5)) / math.sqrt(0.5) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t


def _background(rng: np.random.Generator, s: int, base: np.ndarray) -> np.ndarray:
    """Smooth background around colour ``base``: a soft gradient plus low-frequency blotches."""
    c1 = np.clip(base + rng.normal(0, 35, 3), 0, 255)
    img = _gradient(rng, s, base, c1)
    blotch = cv2.resize(rng.normal(0, 1, (4, 4, 3)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    return img + blotch * rng.uniform(4, 12)


def _polygon(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Outline(s) of a unit shape centred at 0 (radius about 1): the first is filled, the others are holes."""
    if kind == "circle":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        return [np.stack([np.cos(t), np.sin(t)], 1)]
    if kind == "ring":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        inner = rng.uniform(0.45, 0.65)
        return [np.stack([np.cos(t), np.sin(t)], 1), inner * np.stack([np.cos(t), np.sin(t)], 1)]
    if kind == "triangle":
        t = np.array([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
        return [np.stack([np.cos(t), np.sin(t)], 1)]
    if kind == "cross":
        w = rng.uniform(0.25, 0.4)
        return [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w],
                          [-1, -w], [-w, -w]], np.float64)]
    raise ValueError(f"unknown shape {kind!r}")


def _shape_mask(rng: np.random.Generator, kind: str, s: int) -> np.ndarray:
    """(s, s) float mask in [0, 1] of one randomly placed, rotated and stretched shape (anti-aliased)."""
    radius = rng.uniform(0.5, 0.85) * s / 2
    aspect = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    margin = radius * 0.8
    center = rng.uniform(margin, s - margin, 2) if s - 2 * margin > 0 else np.full(2, s / 2)
    big = np.zeros((s * _SS, s * _SS), np.uint8)
    polys = []
    for poly in _polygon(kind, rng):
        pts = (poly * [aspect, 1 / aspect]) @ rot.T * radius + center
        polys.append(np.round((pts + 0.5) * _SS - 0.5).astype(np.int32))
    cv2.fillPoly(big, polys[:1], 255)
    if len(polys) > 1:  # the inner outline of a ring is a hole
        cv2.fillPoly(big, polys[1:], 0)
    return cv2.resize(big, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _texture_mask(rng: np.random.Generator, kind: str, s: int) -> np.ndarray:
    """(s, s) float pattern in [0, 1] covering the image."""
    period = rng.uniform(0.18, 0.35) * s
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    u = (math.cos(angle) * xx + math.sin(angle) * yy) / period + rng.uniform(0, 1)
    v = (-math.sin(angle) * xx + math.cos(angle) * yy) / period + rng.uniform(0, 1)
    soft = lambda d, w: np.clip((w - d) * period, -0.5, 0.5) + 0.5  # noqa: E731 - anti-aliased |d| < w
    if kind == "stripes":
        duty = rng.uniform(0.3, 0.6)
        return soft(np.abs(u - np.floor(u) - 0.5), duty / 2)
    if kind == "checkerboard":
        return (((np.floor(u) + np.floor(v)) % 2) == 0).astype(np.float64)
    if kind == "grid":
        w = rng.uniform(0.08, 0.2) / 2
        return np.maximum(soft(np.abs(u - np.floor(u) - 0.5), w), soft(np.abs(v - np.floor(v) - 0.5), w))
    if kind == "dots":
        r = rng.uniform(0.2, 0.35)
        d = np.hypot(u - np.floor(u) - 0.5, v - np.floor(v) - 0.5)
        return soft(d, r)
    raise ValueError(f"unknown texture {kind!r}")


def _scribbles(rng: np.random.Generator, img: np.ndarray) -> None:
    s = img.shape[0]
    for _ in range(int(rng.integers(0, 3))):
        pts = np.cumsum(rng.normal(0, s * 0.15, (int(rng.integers(2, 5)), 2)), 0) + rng.uniform(0, s, 2)
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, tuple(float(c) for c in _color(rng)),
                      1, cv2.LINE_AA, 4)


def render(rng: np.random.Generator, class_name: str, size: int = 64) -> np.ndarray:
    """One (size, size, 3) RGB uint8 image of ``class_name``."""
    s = int(size)
    if class_name in SHAPES:
        base = _color(rng)
        img = _background(rng, s, base)
        fg = _contrasting(rng, base)
        fill = _gradient(rng, s, fg, np.clip(fg + rng.normal(0, 25, 3), 0, 255)) if rng.random() < 0.3 else fg
        mask = _shape_mask(rng, class_name, s)[..., None]
        img = img * (1 - mask) + fill * mask
        if rng.random() < 0.3:  # outline
            edge = cv2.morphologyEx(mask[..., 0], cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))[..., None]
            img = img * (1 - edge) + _contrasting(rng, fg, 60.0) * edge
    elif class_name in TEXTURES:
        c0 = _color(rng)
        c1 = _contrasting(rng, c0)
        pattern = _texture_mask(rng, class_name, s)[..., None]
        img = c0 * (1 - pattern) + c1 * pattern
    else:
        raise ValueError(f"unknown class {class_name!r}; classes: {', '.join(CLASSES)}")
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.float32))
    _scribbles(rng, img)
    img = img * _gradient(rng, s, np.full(3, rng.uniform(0.6, 1.0)), np.full(3, rng.uniform(0.9, 1.25)))
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
    img = img + rng.normal(0, rng.uniform(0, 8), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------- files


def _params(num_train: int, num_val: int, image_size: int, seed: int) -> dict:
    return {"generator": "hrformer.data.synthetic.imagefolder_shapes", "version": GENERATOR_VERSION,
            "classes": list(CLASSES), "num_train": int(num_train), "num_val": int(num_val),
            "image_size": int(image_size), "seed": int(seed)}


def _file_name(class_name: str, index: int) -> str:
    return f"{class_name}_{index:05d}.jpg"


def _remove_outputs(root: Path, params: dict) -> None:
    """Delete the split folders an earlier (finished or interrupted) generation wrote."""
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)


def generate_imagefolder(root: str | Path, num_train: int = 1000, num_val: int = 50, image_size: int = 64,
                         seed: int = 0) -> Path:
    """Write ``num_train`` / ``num_val`` images per class under ``root/{train,val}/<class>/`` and return ``root``.

    Output is byte-identical for the same arguments.  An earlier synthetic generation in ``root`` is replaced; a
    ``root`` with split folders not written by this generator is refused.
    """
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    if params["image_size"] < 32:
        raise ValueError(f"image_size {image_size} is too small (need >= 32)")
    if min(params["num_train"], params["num_val"], params["seed"]) < 0:
        raise ValueError("num_train, num_val and seed must be >= 0")
    common.begin_generation(root, params, foreign=[root / split for split in SPLITS],
                            foreign_what="train/ or val/ folders", remove_outputs=_remove_outputs)
    for split_idx, (split, n) in enumerate(zip(SPLITS, (params["num_train"], params["num_val"]), strict=True)):
        for class_idx, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng(np.random.SeedSequence([params["seed"], split_idx, class_idx, i]))
                image = render(rng, name, params["image_size"])
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise RuntimeError(f"JPEG encoding failed for {folder / _file_name(name, i)}")
                (folder / _file_name(name, i)).write_bytes(buf.tobytes())
    common.finish_generation(root, params)
    return root


def ensure_synthetic_imagefolder(root: str | Path, num_train: int = 1000, num_val: int = 50, image_size: int = 64,
                                 seed: int = 0) -> Path:
    """Generate the dataset under ``root`` unless a complete one with the same parameters is already there."""
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    return common.ensure_generated(root, params, lambda: generate_imagefolder(
        root, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed))


def main(argv: list[str] | None = None) -> None:
    common.run_cli(argv, description=__doc__.splitlines()[0], default_root="data/imagefolder_synthetic",
                   num_train=1000, num_val=50, image_size=64, generate=generate_imagefolder,
                   ensure=ensure_synthetic_imagefolder, what="synthetic ImageFolder",
                   count_help=("training images per class", "validation images per class"))


if __name__ == "__main__":
    main()

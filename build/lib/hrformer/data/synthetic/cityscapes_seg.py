"""Synthetic semantic segmentation data written in exactly the Cityscapes layout.

Layout under ``root`` (as a real Cityscapes download, fine annotations only)::

    leftImg8bit/train/{city}/{city}_{seq:06d}_000019_leftImg8bit.png      RGB images
    gtFine/train/{city}/{city}_{seq:06d}_000019_gtFine_labelIds.png      uint8 label ids
    leftImg8bit/val/...   gtFine/val/...
    .synthetic.json        marker with the generation parameters, written last

Scenes: a cluttered background (a smooth field of muted colours, thin lines, specks, faint rectangles, pixel
noise; all labelled ``background``) with 7-14 objects of seven classes drawn over each other in random order.
Each class is a shape family with its own texture; its colour is saturated, usually (75 %) near the class's own
hue and otherwise of any hue, so colour is a strong but not a sufficient cue:

======  ==========  ============================================================
raw id  train id    class
======  ==========  ============================================================
0       255         unlabelled (ignore): irregular noise patches, an ego-vehicle hood
1       0           background (clutter)
2       1           disc: ellipses with a radial shading
3       2           stripes: rotated rectangles filled with parallel stripes
4       3           checker: rotated squares filled with a checkerboard
5       4           triangle: solid triangles
6       5           dots: irregular blobs with polka dots
7       6           bar: long thin rotated bars (pole-like)
8       7           ring: annuli (what lies inside stays visible)
======  ==========  ============================================================

Label ids follow the Cityscapes convention that 0 is "unlabeled" and map to train ids by :data:`LABEL_MAP`
(``src/hrformer/conf/data/cityscapes_synthetic.yaml`` passes it as the datamodule's ``label_map``).  Output is
byte-identical for the same arguments (every image has its own ``SeedSequence([seed, split, index])``).  Files are
written to a temporary name and renamed; the marker is written last, so an interrupted generation is redone on next use.
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path

import cv2
import numpy as np

from . import common

__all__ = ["CLASS_NAMES", "LABEL_MAP", "UNLABELED", "generate_cityscapes_seg", "ensure_synthetic_cityscapes_seg",
           "render_scene"]

GENERATOR_VERSION = 1
CITIES = {"train": ("shapeburg", "texturheim"), "val": ("clutterville",)}
FRAME = 19  # Cityscapes' annotated frame number

CLASS_NAMES = ("background", "disc", "stripes", "checker", "triangle", "dots", "bar", "ring")
UNLABELED = 0
BACKGROUND = 1
#: raw label id -> train id (0 -> ignore, k -> k - 1)
LABEL_MAP = {UNLABELED: 255, **{k + 1: k for k in range(len(CLASS_NAMES))}}
(DISC, STRIPES, CHECKER, TRIANGLE, DOTS, BAR, RING) = range(2, 9)


# ----------------------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------------------


#: each object class's usual hue (degrees)
CLASS_HUES = {DISC: 0.0, STRIPES: 100.0, CHECKER: 215.0, TRIANGLE: 50.0, DOTS: 280.0, BAR: 165.0, RING: 320.0}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """Hue in degrees, saturation and value in [0, 1] -> RGB float32 in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v), dtype=np.float32) * 255.0


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A background colour: low saturation."""
    return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.9))


def _class_colors(rng: np.random.Generator, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """Main and second (texture) colour of an object: saturated, near the class hue 75 % of the time."""
    hue = CLASS_HUES[kind] + rng.normal(0, 10) if rng.random() < 0.75 else rng.uniform(0, 360)
    sat, val = rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)
    dark = rng.random() < 0.5
    return _hsv(hue, sat, val), _hsv(hue, sat * rng.uniform(0.2, 0.5), val * 0.35 if dark else 1.0)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return xx.astype(np.float32), yy.astype(np.float32)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Cluttered background, (h, w, 3) float32 RGB."""
    grid = np.stack([_muted(rng) for _ in range(15)]).reshape(3, 5, 3)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):  # faint rectangles (low-contrast structure)
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(8, h // 2))
        overlay = img.copy()
        cv2.rectangle(overlay, (x0, y0), (x1, y1), _muted(rng).tolist(), -1)
        img = cv2.addWeighted(overlay, 0.35, img, 0.65, 0.0)
    for _ in range(int(rng.integers(8, 20))):  # thin lines
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, _muted(rng).tolist(), 1, cv2.LINE_AA)
    for _ in range(int(rng.integers(15, 40))):  # specks
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(1, 3)), _muted(rng).tolist(), -1, cv2.LINE_AA)
    return img


def _rotated_rect(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    pts = np.array([[-length / 2, -width / 2], [length / 2, -width / 2], [length / 2, width / 2],
                    [-length / 2, width / 2]])
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + [cx, cy]


def _poly_mask(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 14) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.6, 1.15, n)
    radii = (radii + np.roll(radii, 1) + np.roll(radii, -1)) / 3  # smoother outline
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)


def _object(rng: np.random.Generator, kind: int, img: np.ndarray, xx: np.ndarray, yy: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Mask (h, w) bool and texture (h, w, 3) float32 of one object of class ``kind`` (a raw label id)."""
    h, w = img.shape[:2]
    cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
    angle = float(rng.uniform(0, np.pi))
    c1, c2 = _class_colors(rng, kind)
    tex = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    if kind == DISC:
        r = float(rng.uniform(9, 30))
        axes = (r, r * float(rng.uniform(0.6, 1.0)))
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, ((cx, cy), (2 * axes[0], 2 * axes[1]), math.degrees(angle)), 1, -1)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r
        tex = tex * (1.25 - 0.5 * np.clip(d, 0, 1))[..., None]
        return mask.astype(bool), tex
    if kind == STRIPES:
        pts = _rotated_rect(cx, cy, float(rng.uniform(22, 70)), float(rng.uniform(16, 46)), angle)
        period = float(rng.uniform(4, 8))
        phase = (xx * math.cos(angle + 0.8) + yy * math.sin(angle + 0.8)) % period
        return _poly_mask(h, w, pts), np.where((phase < period / 2)[..., None], c1, c2).astype(np.float32)
    if kind == CHECKER:
        side = float(rng.uniform(20, 50))
        pts = _rotated_rect(cx, cy, side, side * float(rng.uniform(0.8, 1.2)), angle)
        cell = float(rng.uniform(3, 6))
        u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        odd = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1
        return _poly_mask(h, w, pts), np.where(odd[..., None], c1, c2).astype(np.float32)
    if kind == TRIANGLE:
        r = float(rng.uniform(12, 32))
        a = angle + np.array([0.0, 2.094, 4.189]) + rng.uniform(-0.35, 0.35, 3)
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
        return _poly_mask(h, w, pts), tex
    if kind == DOTS:
        pts = _blob(rng, cx, cy, float(rng.uniform(12, 30)))
        spacing = float(rng.uniform(5, 8))
        u = (xx - cx) % spacing - spacing / 2
        v = (yy - cy) % spacing - spacing / 2
        dot = u ** 2 + v ** 2 <= (spacing * 0.28) ** 2
        return _poly_mask(h, w, pts), np.where(dot[..., None], c2, c1).astype(np.float32)
    if kind == BAR:
        pts = _rotated_rect(cx, cy, float(rng.uniform(35, 100)), float(rng.uniform(4, 7)), angle)
        return _poly_mask(h, w, pts), tex
    if kind == RING:
        r = float(rng.uniform(12, 30))
        t = float(rng.uniform(4, 8))
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        return (d <= r) & (d >= r - t), tex
    raise ValueError(f"unknown object kind {kind}")


def _ignore_patch(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An irregular 'unlabelled' region filled with blurred colour noise."""
    pts = _blob(rng, float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(10, 30)), n=8)
    noise = rng.integers(0, 256, (max(1, h // 6), max(1, w // 6), 3)).astype(np.float32)
    return _poly_mask(h, w, pts), cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)


def render_scene(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (h, w, 3) RGB uint8 image and (h, w) uint8 raw label ids (see the module docstring)."""
    img = _background(rng, w, h)
    label = np.full((h, w), BACKGROUND, np.uint8)
    xx, yy = _coords(h, w)
    kinds = list(rng.integers(DISC, RING + 1, int(rng.integers(7, 15))))
    n_ignore = int(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15]))
    kinds += [UNLABELED] * n_ignore
    for k in rng.permutation(len(kinds)):
        kind = int(kinds[k])
        mask, tex = _ignore_patch(rng, h, w) if kind == UNLABELED else _object(rng, kind, img, xx, yy)
        img[mask] = tex[mask]
        label[mask] = kind
    if rng.random() < 0.3:  # ego-vehicle hood along the bottom edge, unlabelled as in Cityscapes
        hood = np.zeros((h, w), np.uint8)
        cv2.ellipse(hood, (w // 2, h + int(h * 0.05)), (int(w * 0.6), int(h * rng.uniform(0.12, 0.22))), 0, 0,
                    360, 1, -1)
        img[hood.astype(bool)] = _muted(rng) * 0.4
        label[hood.astype(bool)] = UNLABELED
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


# ----------------------------------------------------------------------------------------------------------
# dataset files
# ----------------------------------------------------------------------------------------------------------


def _params(num_train: int, num_val: int, image_size, seed: int) -> dict:
    w, h = (int(v) for v in image_size)
    return {"generator": "hrformer.data.synthetic.cityscapes_seg", "version": GENERATOR_VERSION,
            "num_train": int(num_train), "num_val": int(num_val), "image_size": [w, h], "seed": int(seed)}


def _stems(split: str, n: int) -> list[tuple[str, str]]:
    """(city, file stem) of the n images of a split, spread over the split's cities."""
    cities = CITIES[split]
    return [(cities[i % len(cities)], f"{cities[i % len(cities)]}_{i:06d}_{FRAME:06d}") for i in range(n)]


def _paths(root: Path, split: str, city: str, stem: str) -> tuple[Path, Path]:
    return (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def _generated_files(root: Path, params: dict) -> list[Path]:
    files = []
    for split, n in (("train", params["num_train"]), ("val", params["num_val"])):
        for city, stem in _stems(split, int(n)):
            files += list(_paths(root, split, city, stem))
    return files


def _write_png_atomic(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def _remove_outputs(root: Path, params: dict) -> None:
    """Delete the files (and leftover temporary files) of the generation with ``params``."""
    for f in _generated_files(root, params):
        f.unlink(missing_ok=True)
        f.with_name(f.name + ".tmp").unlink(missing_ok=True)


def generate_cityscapes_seg(root: str | Path, num_train: int = 600, num_val: int = 150,
                            image_size: tuple[int, int] = (256, 128), seed: int = 0) -> Path:
    """Write the synthetic Cityscapes-layout set under ``root`` and return ``root``.

    ``image_size`` is (width, height).  Files of an earlier synthetic generation in ``root`` are removed first
    (only those); a ``root`` holding Cityscapes folders not written by this generator is refused.
    """
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    w, h = params["image_size"]
    if w < 32 or h < 32:
        raise ValueError(f"image_size {image_size} is too small (need >= 32x32)")
    if min(params["num_train"], params["num_val"], params["seed"]) < 0:
        raise ValueError("num_train, num_val and seed must be >= 0")
    common.begin_generation(root, params, foreign=(root / "leftImg8bit", root / "gtFine"),
                            foreign_what="Cityscapes folders", remove_outputs=_remove_outputs,
                            required_keys=("num_train",))
    for split_idx, (split, n) in enumerate((("train", params["num_train"]), ("val", params["num_val"]))):
        for city in CITIES[split]:
            for top in ("leftImg8bit", "gtFine"):
                (root / top / split / city).mkdir(parents=True, exist_ok=True)
        for i, (city, stem) in enumerate(_stems(split, n)):
            rng = np.random.default_rng(np.random.SeedSequence([params["seed"], split_idx, i]))
            image, label = render_scene(rng, w, h)
            image_path, label_path = _paths(root, split, city, stem)
            _write_png_atomic(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            _write_png_atomic(label_path, label)
    common.finish_generation(root, params)
    return root


def ensure_synthetic_cityscapes_seg(root: str | Path, num_train: int = 600, num_val: int = 150,
                                    image_size: tuple[int, int] = (256, 128), seed: int = 0) -> Path:
    """Generate the dataset under ``root`` unless a complete one with the same parameters is already there."""
    root = Path(root)
    params = _params(num_train, num_val, image_size, seed)
    return common.ensure_generated(root, params, lambda: generate_cityscapes_seg(
        root, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed))


def main(argv: list[str] | None = None) -> None:
    common.run_cli(argv, description=__doc__.splitlines()[0], default_root="data/cityscapes_synthetic",
                   num_train=600, num_val=150, image_size=(256, 128), generate=generate_cityscapes_seg,
                   ensure=ensure_synthetic_cityscapes_seg, what="synthetic Cityscapes-layout segmentation set")


if __name__ == "__main__":
    main()

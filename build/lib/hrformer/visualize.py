"""Drawing keypoint skeletons and segmentation overlays: shared by the W&B pictures, the run-directory PNGs and
``scripts/demo_pose.py`` / ``scripts/demo_seg.py``.

Conventions: images are RGB ``uint8`` ``(H, W, 3)``; keypoints are ``(x, y)`` in pixels of that image with integer
coordinates at pixel centres (as everywhere in the project, see ``hrformer.data.geometry``).  Nothing is drawn
in place: every function returns a new image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .codecs.heatmap import COCO_KEYPOINT_NAMES, COCO_SKELETON

__all__ = ["LEFT_COLOR", "RIGHT_COLOR", "CENTER_COLOR", "PANEL_GAP", "draw_skeleton", "pose_panel", "denormalize",
           "seg_palette", "colorize", "seg_overlay", "seg_legend", "seg_panel", "fit_to_side"]

LEFT_COLOR: tuple[int, int, int] = (0, 200, 255)    # RGB: left joints and limbs (light blue)
RIGHT_COLOR: tuple[int, int, int] = (255, 128, 0)   # right (orange)
CENTER_COLOR: tuple[int, int, int] = (60, 220, 60)  # nose and limbs joining left to right (green)
PANEL_GAP = 2  # white pixels between the two halves of a pose_panel
_SHIFT = 4     # cv2 fixed-point fraction bits: sub-pixel accurate drawing


def _sides(num_joints: int) -> list[int]:
    """-1 left, +1 right, 0 centre per joint (from the COCO names; other layouts: all centre)."""
    if num_joints != len(COCO_KEYPOINT_NAMES):
        return [0] * num_joints
    return [-1 if n.startswith("left_") else 1 if n.startswith("right_") else 0 for n in COCO_KEYPOINT_NAMES]


def _fixed(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * (1 << _SHIFT))), int(round(p[1] * (1 << _SHIFT)))


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | Sequence[float] | None = None,
                  thr: float = 0.3, skeleton: Sequence[Sequence[int]] = COCO_SKELETON,
                  left_color: Sequence[int] = LEFT_COLOR, right_color: Sequence[int] = RIGHT_COLOR,
                  center_color: Sequence[int] = CENTER_COLOR, radius: int | None = None,
                  thickness: int | None = None) -> np.ndarray:
    """Draw one person's skeleton: limbs as lines, joints as filled dots, left and right in different colours.

    Args:
        image: (H, W, 3) RGB uint8 (not modified).
        keypoints: (K, 2) (or (K, 3), the third column ignored) ``(x, y)`` in pixels of ``image``.
        scores: (K,) confidences, or COCO visibility flags (0, 1, 2); a joint is drawn when its score is
            ``> thr`` (and its coordinates are finite), a limb when both of its joints are.  None: all drawn.
        thr: score threshold.
        skeleton: 0-based joint index pairs.
        left_color, right_color, center_color: RGB colours; a limb takes its joints' side, centre when mixed.
        radius, thickness: dot radius and line thickness in px (None: from the image size, at least 1).

    Returns:
        A new (H, W, 3) uint8 image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    kpts = np.asarray(keypoints, dtype=np.float64)[:, :2]
    k = kpts.shape[0]
    visible = np.isfinite(kpts).all(1)
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != k:
            raise ValueError(f"{k} keypoints but {s.shape[0]} scores")
        visible &= s > thr
    side = _sides(k)
    colors = {-1: tuple(int(c) for c in left_color), 1: tuple(int(c) for c in right_color),
              0: tuple(int(c) for c in center_color)}
    scale = min(out.shape[:2])
    radius = radius if radius is not None else max(1, round(scale / 120))
    thickness = thickness if thickness is not None else max(1, round(scale / 200))
    for a, b in skeleton:
        if a < k and b < k and visible[a] and visible[b]:
            color = colors[side[a] if side[a] == side[b] else 0]
            cv2.line(out, _fixed(kpts[a]), _fixed(kpts[b]), color, thickness, cv2.LINE_AA, _SHIFT)
    for j in np.flatnonzero(visible):
        cv2.circle(out, _fixed(kpts[j]), radius << _SHIFT, colors[side[j]], -1, cv2.LINE_AA, _SHIFT)
    return out


def _upscale(image: np.ndarray, min_height: int) -> tuple[np.ndarray, int]:
    h = image.shape[0]
    if h >= min_height:
        return image, 1
    f = math.ceil(min_height / h)
    return cv2.resize(image, (image.shape[1] * f, h * f), interpolation=cv2.INTER_LINEAR), f


def pose_panel(image: np.ndarray, pred_keypoints: np.ndarray, pred_scores: np.ndarray | None,
               gt_keypoints: np.ndarray | None = None, thr: float = 0.3, min_height: int = 0) -> np.ndarray:
    """Prediction beside ground truth: ``[image + predicted skeleton | gap | image + GT skeleton]``.

    Args:
        image: (H, W, 3) RGB uint8 (a network input crop or a whole image).
        pred_keypoints: (K, 2) predicted ``(x, y)`` in pixels of ``image``.
        pred_scores: (K,) predicted scores (joints ``> thr`` drawn), or None (all drawn).
        gt_keypoints: (K, 3) ``(x, y, visibility)`` in pixels of ``image``; joints with visibility > 0 drawn.
            None, or no visible joint (detected boxes carry zeros): only the prediction is returned.
        thr: threshold on ``pred_scores``.
        min_height: smaller images are first enlarged by an integer factor to at least this height (keypoints
            follow), so that the skeletons of small crops stay legible; 0: never.

    Returns:
        (H', W') or (H', 2 W' + PANEL_GAP) RGB uint8; the halves are drawn identically, so equal predictions
        and ground truth give identical halves.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    image, f = _upscale(image, min_height)

    def scaled(k: np.ndarray) -> np.ndarray:  # cv2.resize: x_out = (x_in + 0.5) * f - 0.5
        return (np.asarray(k, dtype=np.float64)[:, :2] + 0.5) * f - 0.5

    left = draw_skeleton(image, scaled(pred_keypoints), pred_scores, thr)
    if gt_keypoints is None:
        return left
    gt = np.asarray(gt_keypoints, dtype=np.float64)
    vis = (gt[:, 2] > 0).astype(np.float64)
    if not vis.any():
        return left
    right = draw_skeleton(image, scaled(gt), vis, 0.5)
    gap = np.full((image.shape[0], PANEL_GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def denormalize(image: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """A normalised (3, H, W) network input (torch tensor or numpy) -> (H, W, 3) RGB uint8.

    ``mean``/``std`` default to the ImageNet statistics the datamodule normalises with.
    """
    if mean is None or std is None:
        from .data.common import IMAGENET_MEAN, IMAGENET_STD

        mean = IMAGENET_MEAN if mean is None else mean
        std = IMAGENET_STD if std is None else std
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {arr.shape}")
    arr = arr.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# segmentation
# ---------------------------------------------------------------------------------------------------------

SEG_IGNORE = 255


def seg_palette(num_classes: int, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """(256, 3) uint8 colour table: class i -> ``palette[i]`` (or the PASCAL VOC bit-interleaved colour of i + 1,
    so no class is black), every other value (the ignore label) black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    if palette is not None:
        colors = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
        if len(colors) < num_classes:
            raise ValueError(f"{len(colors)} palette colours for {num_classes} classes")
        table[:num_classes] = np.clip(colors[:num_classes], 0, 255)
        return table
    for i in range(num_classes):
        c, rgb = i + 1, [0, 0, 0]
        for j in range(8):
            for k in range(3):
                rgb[k] |= ((c >> k) & 1) << (7 - j)
            c >>= 3
        table[i] = rgb
    return table


def colorize(mask: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(H, W) integer class map -> (H, W, 3) RGB uint8 through a :func:`seg_palette` table."""
    return table[np.asarray(mask).astype(np.int64).clip(0, 255)]


def seg_overlay(image: np.ndarray, mask: np.ndarray, table: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the class colours into an (H, W, 3) RGB uint8 image; ignore pixels (255) keep the image."""
    image = np.asarray(image, dtype=np.uint8)
    mask = np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, table).astype(np.float32)
    out = np.where((mask == SEG_IGNORE)[..., None], image.astype(np.float32), blended)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def seg_legend(class_ids: Sequence[int], names: Sequence[str], table: np.ndarray, width: int,
               row_height: int = 14) -> np.ndarray:
    """A white strip ``width`` px wide listing ``class_ids`` as colour swatch + name, several per row."""
    ids = [int(c) for c in class_ids if 0 <= int(c) < len(names)]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    items = [(c, names[c], cv2.getTextSize(names[c], font, scale, 1)[0][0] + row_height + 10) for c in ids]
    rows: list[list[tuple[int, str, int]]] = [[]]
    used = 0
    for item in items:
        if rows[-1] and used + item[2] > width:
            rows.append([])
            used = 0
        rows[-1].append(item)
        used += item[2]
    strip = np.full((max(1, len(rows)) * row_height + 4, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        x, y = 2, 2 + r * row_height
        for c, name, w in row:
            cv2.rectangle(strip, (x, y + 2), (x + row_height - 5, y + row_height - 3),
                          tuple(int(v) for v in table[c]), -1)
            cv2.putText(strip, name, (x + row_height - 1, y + row_height - 4), font, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
            x += w
    return strip


def fit_to_side(image: np.ndarray, masks: list[np.ndarray], max_side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reduce an image (area) and its class maps (nearest) so that the long side is at most ``max_side``."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image, masks
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            [cv2.resize(np.asarray(m, dtype=np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks])


def seg_panel(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, table: np.ndarray,
              class_names: Sequence[str] | None = None, alpha: float = 0.5, max_side: int = 512) -> np.ndarray:
    """``[image | image + predicted colours | image + ground-truth colours]`` (the last one only with ``gt``),
    with a legend of the classes present when ``class_names`` is given.

    ``image`` (H, W, 3) RGB uint8, ``pred`` / ``gt`` (H, W) class maps (255 = ignore).  Images with a side above
    ``max_side`` are first reduced (masks by nearest neighbour).
    """
    masks = [np.asarray(pred)] + ([np.asarray(gt)] if gt is not None else [])
    image, masks = fit_to_side(np.ascontiguousarray(image, dtype=np.uint8), masks, max_side)
    gap = np.full((image.shape[0], PANEL_GAP, 3), 255, dtype=np.uint8)
    parts = [image]
    for m in masks:
        parts += [gap, seg_overlay(image, m, table, alpha)]
    panel = np.concatenate(parts, axis=1)
    if class_names is not None:
        present = np.unique(np.concatenate([m.reshape(-1) for m in masks]))
        panel = np.concatenate([panel, seg_legend(present, class_names, table, panel.shape[1])], axis=0)
    return panel

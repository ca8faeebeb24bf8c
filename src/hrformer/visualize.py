"""Drawing keypoint skeletons: shared by the W&B pictures, the run-directory PNGs and ``scripts/demo_pose.py``.

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

__all__ = ["LEFT_COLOR", "RIGHT_COLOR", "CENTER_COLOR", "PANEL_GAP", "draw_skeleton", "pose_panel", "denormalize"]

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
        from .data.coco_keypoints import IMAGENET_MEAN, IMAGENET_STD

        mean = IMAGENET_MEAN if mean is None else mean
        std = IMAGENET_STD if std is None else std
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {arr.shape}")
    arr = arr.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)

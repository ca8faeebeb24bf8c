"""Top-down crop geometry (person box -> crop region -> affine transform), as in the official HRNet pose code.

Conventions used throughout:

* Points are ``(x, y)`` in pixels, x to the right, y downwards.  Integer coordinates are pixel centres and no
  half-pixel correction is applied anywhere (the official ``lib/utils/transforms.py`` convention): a crop of
  width ``W`` has its centre at ``x = W / 2``.
* Sizes are ``(width, height)``.  The crop region ``size`` is in image pixels: it equals the official
  ``scale * 200`` (``pixel_std``), so nothing here knows about ``pixel_std``.
* A box is ``(x, y, w, h)`` with ``(x, y)`` its top-left corner; its centre is ``(x + 0.5 * w, y + 0.5 * h)``
  (official ``_xywh2cs``).
* ``rotation_deg`` follows the official ``get_affine_transform``: a positive angle rotates the image content
  counter-clockwise *as displayed* (y down) inside the crop.  Precisely, for an output of size ``(ow, oh)``
  and a crop region of width ``w``::

      dst = (ow / 2, oh / 2) + (ow / w) * R(-theta) @ (src - center)
      R(t) = [[cos t, -sin t], [sin t, cos t]]

  Only the region *width* sets the scale (as in the official code); the region height is implied by the output
  aspect ratio, which is why boxes are padded to that aspect ratio first (:func:`box_to_center_size`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["box_to_center_size", "get_affine_transform", "affine_points", "warp_to_crop"]


def box_to_center_size(box_xywh: Sequence[float] | np.ndarray, aspect_ratio: float,
                       padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Person box -> crop centre and crop region size (official ``_xywh2cs``).

    Args:
        box_xywh: ``(x, y, w, h)`` in image pixels, ``(x, y)`` the top-left corner.
        aspect_ratio: input width / input height of the network (e.g. ``192 / 256 = 0.75``).
        padding: factor applied to both sides after the aspect-ratio padding (1.25 for boxes; the official
            half-body augmentation uses 1.5).

    Returns:
        ``center`` float64 (2,) = ``(x + 0.5 * w, y + 0.5 * h)`` and ``size`` float64 (2,) =
        ``(w', h') * padding`` where ``(w', h')`` is the box grown along one axis so that
        ``w' / h' == aspect_ratio``.
        ``size`` is in image pixels (official ``scale * 200``).
    """
    x, y, w, h = (float(v) for v in np.asarray(box_xywh, dtype=np.float64).reshape(4))
    if aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    size = np.array([w, h], dtype=np.float64) * padding
    return center, size


def _rotate(vec: Sequence[float], rot_rad: float) -> np.ndarray:
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array([vec[0] * cs - vec[1] * sn, vec[0] * sn + vec[1] * cs], dtype=np.float64)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b + (a - b)`` rotated by 90 degrees (official ``get_3rd_point``)."""
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(center: Sequence[float] | np.ndarray, size: Sequence[float] | np.ndarray,
                         rotation_deg: float, output_size: Sequence[int] | np.ndarray,
                         inverse: bool = False) -> np.ndarray:
    """Affine matrix mapping the (rotated) crop region of the image onto the output (official construction).

    Three point pairs are mapped (src in the image, dst in the output): the centre ``center -> (ow/2, oh/2)``;
    ``center + rot((0, -w/2)) -> (ow/2, oh/2) + (0, -ow/2)``; and the third points obtained by rotating each
    first-minus-second difference by 90 degrees.  The points are float32 as in the official code and the
    matrix comes from ``cv2.getAffineTransform``; forward and inverse use the same points, so they are exact
    inverses of each other (to float64 precision).

    Args:
        center: (2,) crop centre in image pixels.
        size: (2,) crop region ``(w, h)`` in image pixels (official ``scale * 200``); only ``w`` is used.
        rotation_deg: rotation in degrees (see the module docstring for the direction).
        output_size: ``(width, height)`` of the output (network input, or heatmap for back-projection).
        inverse: if True return the output -> image matrix instead.

    Returns:
        (2, 3) float64 matrix ``M`` with ``dst = M[:, :2] @ src + M[:, 2]``.
    """
    center = np.asarray(center, dtype=np.float64).reshape(2)
    src_w = float(np.asarray(size, dtype=np.float64).reshape(-1)[0])
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rot_rad = np.pi * float(rotation_deg) / 180.0

    # Same rounding as the official code: the two first points are computed in float64 and stored as float32,
    # the third ones are computed from the stored float32 points.  (This matters: for small crops far from the
    # origin the float32 rounding moves the matrix translation by ~0.1 px.)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + _rotate((0.0, -0.5 * src_w), rot_rad)
    src[2] = _third_point(src[0], src[1])
    dst[0] = (dst_w * 0.5, dst_h * 0.5)
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, -0.5 * dst_w])
    dst[2] = _third_point(dst[0], dst[1])
    if inverse:
        return cv2.getAffineTransform(dst, src).astype(np.float64)
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points.

    Args:
        points: (N, 2) (or any (..., 2)) ``(x, y)`` coordinates.
        matrix: (2, 3) affine matrix, e.g. from :func:`get_affine_transform`.

    Returns:
        float64 array of the same shape as ``points``.
    """
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp_to_crop(image: np.ndarray, center: Sequence[float] | np.ndarray, size: Sequence[float] | np.ndarray,
                 rotation: float, output_size: Sequence[int]) -> np.ndarray:
    """Crop (and rotate/scale) the region around ``center`` into an ``output_size`` image.

    Args:
        image: (H, W, 3) uint8 (any dtype/channels ``cv2.warpAffine`` accepts).
        center, size, rotation: as in :func:`get_affine_transform` (image pixels, degrees).
        output_size: ``(width, height)`` of the crop.

    Returns:
        (out_h, out_w, C) crop, bilinear interpolation (``INTER_LINEAR``), zeros outside the image.
    """
    out_w, out_h = int(output_size[0]), int(output_size[1])
    matrix = get_affine_transform(center, size, rotation, (out_w, out_h))
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)

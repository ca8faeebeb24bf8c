"""Gaussian heatmap codec for top-down keypoints (official ``generate_target`` / ``get_final_preds``; DARK).

Coordinate conventions (the official ones, no half-pixel correction):

* Keypoints given to :meth:`HeatmapCodec.encode` are ``(x, y)`` in pixels of the network input crop
  (``input_size = (w, h)``), e.g. the output of ``geometry.affine_points`` with the crop matrix.
* Heatmap pixel ``(i, j)`` (column i, row j) stands for the input-crop point ``(i * stride_x, j * stride_y)``
  with ``stride = input_size / heatmap_size`` per axis; input ``x`` lands at heatmap ``x / stride_x``.
* :meth:`HeatmapCodec.decode` returns ``(x, y)`` in heatmap pixels; :meth:`HeatmapCodec.heatmap_to_image` maps
  them to image pixels with the inverse affine transform computed for the *heatmap* size (rotation 0).
* Heatmap arrays are ``(K, H, W)`` / ``(B, K, H, W)`` (row = y, column = x).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..data.geometry import affine_points, get_affine_transform

__all__ = [
    "COCO_KEYPOINT_NAMES", "COCO_FLIP_PAIRS", "COCO_SKELETON", "COCO_SIGMAS",
    "HeatmapCodec", "flip_back", "flip_keypoints",
]

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)
# 0-based links (mmpose configs/_base_/datasets/coco.py order).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# Per-keypoint OKS sigmas (COCO evaluation).
COCO_SIGMAS: np.ndarray = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087,
     0.087, 0.089, 0.089], dtype=np.float64)
COCO_SIGMAS.setflags(write=False)


def _pair_permutation(num_channels: int, flip_pairs: Sequence[Sequence[int]]) -> list[int]:
    perm = list(range(num_channels))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def flip_back(heatmaps: torch.Tensor | np.ndarray, flip_pairs: Sequence[Sequence[int]] = COCO_FLIP_PAIRS,
              shift: bool = True) -> torch.Tensor | np.ndarray:
    """Heatmaps predicted for a horizontally flipped input -> heatmaps for the original input.

    Mirrors along x, swaps the left/right channels of each pair and, with ``shift=True``, shifts the result
    right by one heatmap pixel (``out[..., 1:] = out[..., :-1]``; column 0 keeps its value), as the official
    flip test.
    DARK uses ``shift=False``.

    Args:
        heatmaps: (B, K, H, W) torch tensor (or numpy array); not modified.
        flip_pairs: pairs of channel indices to swap.
        shift: apply the official 1-pixel shift.

    Returns:
        New (B, K, H, W) tensor (or array) of the same type, dtype and device.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"expected (B, K, H, W) heatmaps, got shape {tuple(heatmaps.shape)}")
    perm = _pair_permutation(heatmaps.shape[1], flip_pairs)
    if isinstance(heatmaps, torch.Tensor):
        out = heatmaps.flip(-1)[:, perm]
        if shift:
            out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
        return out
    out = np.ascontiguousarray(np.asarray(heatmaps)[..., ::-1][:, perm])
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return out


def flip_keypoints(keypoints: np.ndarray, visible: np.ndarray, image_width: int,
                   flip_pairs: Sequence[Sequence[int]] = COCO_FLIP_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of an image -> keypoints of the mirrored image ``img[:, ::-1]`` (official ``fliplr_joints``).

    ``x -> image_width - 1 - x`` (pixel column ``c`` moves to ``image_width - 1 - c``), ``y`` unchanged, and
    the left/right pairs are swapped (for both coordinates and visibility).  Unlike the official function,
    invisible keypoints are not zeroed.

    Args:
        keypoints: (K, 2) ``(x, y)`` image pixels.
        visible: (K,) visibility flags.
        image_width: width of the image being flipped.
        flip_pairs: pairs of keypoint indices to swap.

    Returns:
        ``(keypoints (K, 2), visible (K,))`` new arrays (float64 keypoints, visibility dtype preserved).
    """
    kpts = np.array(keypoints, dtype=np.float64, copy=True)
    vis = np.array(visible, copy=True)
    kpts[:, 0] = image_width - 1 - kpts[:, 0]
    perm = _pair_permutation(kpts.shape[0], flip_pairs)
    return kpts[perm], vis[perm]


def _blur_kernel_1d(kernel_size: int) -> np.ndarray:
    # Same 1-D kernel cv2.GaussianBlur(..., (k, k), 0) uses: sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8.
    return cv2.getGaussianKernel(kernel_size, 0, ktype=cv2.CV_64F).reshape(-1)


def _gaussian_blur_zero_padded(heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """Separable zero-padded Gaussian blur of (N, H, W); mmpose ``gaussian_blur`` before its rescaling.

    (mmpose pads each map with ``(k - 1) / 2`` zeros and runs ``cv2.GaussianBlur``; the kernel never reaches
    past the padding for interior pixels, so this is a plain zero-padded convolution.)
    """
    k = _blur_kernel_1d(kernel_size)
    src = np.ascontiguousarray(heatmaps, dtype=np.float64)
    out = np.empty_like(src)
    for i in range(src.shape[0]):
        out[i] = cv2.sepFilter2D(src[i], cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)
    return out


class HeatmapCodec:
    """Keypoints <-> Gaussian heatmaps (official MSRA/HRNet target; optional DARK encoding and decoding).

    Args:
        input_size: network input ``(w, h)`` in pixels, e.g. ``(192, 256)``.
        heatmap_size: heatmap ``(w, h)``, e.g. ``(48, 64)``.
        sigma: Gaussian sigma in heatmap pixels (2 for 256x192, 3 for 384x288).
        unbiased: encoding.  False: official target, a Gaussian centred at the integer heatmap pixel
            ``int(x / stride + 0.5)`` and cut to the ``(2 * int(3 * sigma) + 1)``-pixel square window.
            True (DARK, mmpose ``MSRAHeatmap(unbiased=True)``): centred at the sub-pixel ``x / stride`` and
            evaluated over the whole heatmap.
        dark: decoding.  False: argmax + official quarter offset.  True: argmax + DARK Taylor refinement.
            ``None`` (default) follows ``unbiased`` (DARK = unbiased encoding + DARK decoding).
        blur_kernel_size: DARK blur kernel (odd); default ``int(6 * sigma - 1)`` made odd, i.e. 11 for sigma 2
            and 17 for sigma 3 (the mmpose configs).

    The flip test's 1-px shift (:func:`flip_back`) suits both encodings here: a crop flip maps input x to
    ``W - 1 - x``, which lands ``1 - 1 / stride`` heatmap pixels left of the mirrored heatmap position, so the
    shift leaves a 0.125-px bias at stride 4 where no shift leaves 0.375 px (DARK included; tested).
    """

    def __init__(self, input_size: Sequence[int] = (192, 256), heatmap_size: Sequence[int] = (48, 64),
                 sigma: float = 2.0, unbiased: bool = False, dark: bool | None = None,
                 blur_kernel_size: int | None = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        if min(self.input_size + self.heatmap_size) <= 0:
            raise ValueError(f"sizes must be positive: input {self.input_size}, heatmap {self.heatmap_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma = float(sigma)
        self.unbiased = bool(unbiased)
        self.dark = self.unbiased if dark is None else bool(dark)
        if blur_kernel_size is None:
            blur_kernel_size = int(6 * self.sigma - 1)
            blur_kernel_size += 1 - blur_kernel_size % 2
        if blur_kernel_size < 3 or blur_kernel_size % 2 != 1:
            raise ValueError(f"blur_kernel_size must be odd and >= 3, got {blur_kernel_size}")
        self.blur_kernel_size = int(blur_kernel_size)
        # stride per axis: input pixels per heatmap pixel
        self.stride = np.array([self.input_size[0] / self.heatmap_size[0],
                                self.input_size[1] / self.heatmap_size[1]], dtype=np.float64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"sigma={self.sigma}, unbiased={self.unbiased}, dark={self.dark}, "
                f"blur_kernel_size={self.blur_kernel_size})")

    # ------------------------------------------------------------------ encoding
    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of one instance -> target heatmaps and target weights.

        Args:
            keypoints: (K, 2) ``(x, y)`` in input-crop pixels (may lie outside the crop; non-finite ->
                weight 0).
            visible: (K,) COCO visibility 0/1/2 (anything > 0 counts as visible, as the official clip to
                {0, 1}).

        Returns:
            ``heatmaps`` float32 (K, H, W) with peak 1 (unnormalized ``exp(-d^2 / (2 sigma^2))``) and
            ``weights`` float32 (K,): 1 if visible and the ``3 * sigma`` square window around the Gaussian
            centre contains at least one heatmap pixel, else 0 (and that heatmap is all zeros).  The official
            code tests ``br < 0`` with an exclusive ``br``, which keeps weight 1 for an empty window exactly
            one pixel beyond the left/top edge; here weight 0 always goes with an empty window.
        """
        kpts = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        vis = np.asarray(visible, dtype=np.float64).reshape(-1)
        if vis.shape[0] != kpts.shape[0]:
            raise ValueError(f"{kpts.shape[0]} keypoints but {vis.shape[0]} visibility flags")
        w, h = self.heatmap_size
        radius = 3.0 * self.sigma
        finite = np.isfinite(kpts).all(axis=1)
        mu = np.where(finite[:, None], kpts, 0.0) / self.stride  # (K, 2), heatmap px
        if not self.unbiased:
            mu = np.trunc(mu + 0.5)  # official int(x / stride + 0.5) (truncation toward zero)
        inside = ((mu[:, 0] - radius <= w - 1) & (mu[:, 0] + radius >= 0)
                  & (mu[:, 1] - radius <= h - 1) & (mu[:, 1] + radius >= 0))
        weights = ((vis > 0) & finite & inside).astype(np.float32)

        xs = np.arange(w, dtype=np.float64)
        ys = np.arange(h, dtype=np.float64)
        dx = xs[None, :] - mu[:, :1]  # (K, W)
        dy = ys[None, :] - mu[:, 1:]  # (K, H)
        gx = np.exp(-dx ** 2 / (2 * self.sigma ** 2))
        gy = np.exp(-dy ** 2 / (2 * self.sigma ** 2))
        if not self.unbiased:
            r = float(int(radius))  # official square window mu - r .. mu + r (r = 3 * sigma for sigma 2, 3)
            gx = np.where(np.abs(dx) <= r, gx, 0.0)
            gy = np.where(np.abs(dy) <= r, gy, 0.0)
        heatmaps = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]
        return heatmaps.astype(np.float32), weights

    # ------------------------------------------------------------------ decoding
    def decode(self, heatmaps: torch.Tensor | np.ndarray,
               dark: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps -> keypoint coordinates in heatmap pixels and scores.

        Argmax per map (a map whose max is <= 0 gives ``(0, 0)``, as the official ``get_max_preds``), then
        either the official quarter offset (if ``1 < x < W - 1`` and ``1 < y < H - 1``: ``+0.25 * sign`` of
        the neighbour difference along each axis) or, with DARK, a Newton step on the log of the blurred map
        (if ``1 < x < W - 2`` and ``1 < y < H - 2`` and the Hessian is non-singular).

        Args:
            heatmaps: (B, K, H, W) torch tensor (any device/dtype) or numpy array.
            dark: override the codec's ``dark`` setting for this call.

        Returns:
            ``coords`` float32 (B, K, 2) ``(x, y)`` heatmap pixels and ``scores`` float32 (B, K) (max values
            of the unblurred heatmaps).
        """
        if isinstance(heatmaps, torch.Tensor):
            hm = heatmaps.detach().to("cpu", torch.float32).numpy()
        else:
            hm = np.asarray(heatmaps, dtype=np.float32)
        if hm.ndim != 4:
            raise ValueError(f"expected (B, K, H, W) heatmaps, got shape {hm.shape}")
        b, k, h, w = hm.shape
        flat = hm.reshape(b * k, h * w)
        n = b * k
        rows = np.arange(n)
        idx = flat.argmax(axis=1)
        scores = flat[rows, idx]
        px = idx % w
        py = idx // w
        valid = scores > 0
        px = np.where(valid, px, 0)
        py = np.where(valid, py, 0)
        coords = np.stack([px, py], axis=1).astype(np.float64)
        maps = hm.reshape(n, h, w)

        use_dark = self.dark if dark is None else bool(dark)
        if not use_dark:
            ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
            cx = np.clip(px, 1, max(w - 2, 1))
            cy = np.clip(py, 1, max(h - 2, 1))
            if w >= 3 and h >= 3:
                diff_x = maps[rows, cy, cx + 1].astype(np.float64) - maps[rows, cy, cx - 1]
                diff_y = maps[rows, cy + 1, cx].astype(np.float64) - maps[rows, cy - 1, cx]
                coords[:, 0] += np.where(ok, 0.25 * np.sign(diff_x), 0.0)
                coords[:, 1] += np.where(ok, 0.25 * np.sign(diff_y), 0.0)
        else:
            coords += self._dark_offsets(maps, px, py)
        return coords.reshape(b, k, 2).astype(np.float32), scores.reshape(b, k).astype(np.float32)

    def _dark_offsets(self, maps: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """DARK Taylor step (mmpose ``refine_keypoints_dark``) for (N, H, W) maps at integer maxima (N,)."""
        n, h, w = maps.shape
        offsets = np.zeros((n, 2), dtype=np.float64)
        ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
        if not ok.any():
            return offsets
        sel = np.nonzero(ok)[0]
        src = maps[sel].astype(np.float64)
        blurred = _gaussian_blur_zero_padded(src, self.blur_kernel_size)
        orig_max = src.reshape(len(sel), -1).max(axis=1)
        blur_max = blurred.reshape(len(sel), -1).max(axis=1)
        factor = np.divide(orig_max, blur_max, out=np.ones_like(orig_max), where=blur_max > 0)
        logm = np.log(np.maximum(blurred * factor[:, None, None], 1e-10))

        r = np.arange(len(sel))
        x, y = px[sel], py[sel]

        def at(dx: int, dy: int) -> np.ndarray:
            return logm[r, y + dy, x + dx]

        center = at(0, 0)
        gx = 0.5 * (at(1, 0) - at(-1, 0))
        gy = 0.5 * (at(0, 1) - at(0, -1))
        hxx = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
        hyy = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
        hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = hxx * hyy - hxy ** 2
        nz = det != 0
        safe = np.where(nz, det, 1.0)
        # offset = -H^{-1} g with H^{-1} = [[hyy, -hxy], [-hxy, hxx]] / det
        ox = -(hyy * gx - hxy * gy) / safe
        oy = -(-hxy * gx + hxx * gy) / safe
        offsets[sel, 0] = np.where(nz, ox, 0.0)
        offsets[sel, 1] = np.where(nz, oy, 0.0)
        return offsets

    # ------------------------------------------------------------------ back-projection
    def heatmap_to_image(self, coords: np.ndarray | torch.Tensor, centers: np.ndarray | torch.Tensor,
                         sizes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Heatmap-pixel coordinates -> image pixels (official ``transform_preds``).

        Uses ``get_affine_transform(center, size, 0, heatmap_size, inverse=True)`` per instance, i.e. the
        heatmap centre ``(W / 2, H / 2)`` maps to ``center`` and one heatmap pixel spans ``size[0] / W`` image
        pixels (no half-pixel correction).

        Args:
            coords: (B, K, 2) ``(x, y)`` heatmap pixels (from :meth:`decode`).
            centers: (B, 2) crop centres in image pixels.
            sizes: (B, 2) crop region sizes ``(w, h)`` in image pixels (official ``scale * 200``).

        Returns:
            (B, K, 2) float64 image pixels.
        """
        coords, centers, sizes = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
                                  for x in (coords, centers, sizes))
        coords = np.asarray(coords, dtype=np.float64)
        centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
        sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
        if coords.ndim != 3 or coords.shape[0] != centers.shape[0] or centers.shape[0] != sizes.shape[0]:
            raise ValueError(f"shape mismatch: coords {coords.shape}, centers {centers.shape}, "
                             f"sizes {sizes.shape}")
        out = np.empty_like(coords)
        for i in range(coords.shape[0]):
            inv = get_affine_transform(centers[i], sizes[i], 0.0, self.heatmap_size, inverse=True)
            out[i] = affine_points(coords[i], inv)
        return out

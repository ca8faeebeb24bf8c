"""Gaussian heatmap codec: official targets, quarter-offset decoding, DARK, flip test, back-projection."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from hrformer.codecs.heatmap import (
    COCO_FLIP_PAIRS,
    COCO_KEYPOINT_NAMES,
    COCO_SIGMAS,
    COCO_SKELETON,
    HeatmapCodec,
    flip_back,
    flip_keypoints,
)
from hrformer.data.geometry import affine_points, box_to_center_size, get_affine_transform

SIGMA = 2.0


def gauss(d2: float, sigma: float = SIGMA) -> float:
    return math.exp(-d2 / (2 * sigma ** 2))


# ---------------------------------------------------------------------------- constants
def test_coco_constants():
    assert len(COCO_KEYPOINT_NAMES) == 17 and COCO_KEYPOINT_NAMES[0] == "nose"
    assert COCO_KEYPOINT_NAMES[16] == "right_ankle"
    assert len(COCO_FLIP_PAIRS) == 8 and len(COCO_SKELETON) == 19 and len(COCO_SIGMAS) == 17
    for a, b in COCO_FLIP_PAIRS:
        assert COCO_KEYPOINT_NAMES[a].replace("left_", "right_") == COCO_KEYPOINT_NAMES[b]
        assert COCO_SIGMAS[a] == COCO_SIGMAS[b]
    assert all(0 <= i < 17 and 0 <= j < 17 and i != j for i, j in COCO_SKELETON)
    assert len({frozenset(link) for link in COCO_SKELETON}) == 19


# ---------------------------------------------------------------------------- encode (official)
def test_encode_gaussian_at_rounded_pixel():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    hm, w = codec.encode(np.array([[101.0, 70.6]]), np.array([2]))
    assert hm.shape == (1, 64, 48) and hm.dtype == np.float32 and w.dtype == np.float32
    mx, my = int(101.0 / 4 + 0.5), int(70.6 / 4 + 0.5)  # 25, 18
    assert (mx, my) == (25, 18)
    assert hm[0, my, mx] == pytest.approx(1.0)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (my, mx)
    assert hm[0, my, mx + 1] == pytest.approx(gauss(1), rel=1e-6)
    assert hm[0, my - 1, mx] == pytest.approx(gauss(1), rel=1e-6)
    assert hm[0, my + 1, mx - 1] == pytest.approx(gauss(2), rel=1e-6)
    assert hm[0, my + 2, mx - 3] == pytest.approx(gauss(13), rel=1e-6)
    assert hm[0, my, mx + 6] == pytest.approx(gauss(36), rel=1e-5)  # window edge (radius 3 sigma) included
    assert hm[0, my, mx + 7] == 0 and hm[0, my + 7, mx] == 0  # outside the square window
    assert hm[0, my + 6, mx + 6] == pytest.approx(gauss(72), rel=1e-4)  # the window is a square
    assert (hm[0] > 0).sum() == 13 * 13
    assert w[0] == 1


def test_encode_per_axis_stride():
    codec = HeatmapCodec((192, 256), (48, 32), sigma=SIGMA)  # stride (4, 8)
    hm, _ = codec.encode(np.array([[40.0, 80.0]]), np.array([1]))
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (10, 10)


def test_encode_weights_visibility():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    kpts = np.array([[50.0, 60.0]] * 3 + [[np.nan, 3.0]])
    hm, w = codec.encode(kpts, np.array([0, 1, 2, 2]))
    np.testing.assert_array_equal(w, [0, 1, 1, 0])
    assert (hm[0] == 0).all() and (hm[3] == 0).all()
    np.testing.assert_array_equal(hm[1], hm[2])


@pytest.mark.parametrize("unbiased", [False, True])
def test_encode_far_outside_has_zero_weight(unbiased):
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA, unbiased=unbiased)
    kpts = np.array([[-100.0, 50.0], [500.0, 50.0], [50.0, -100.0], [50.0, 1000.0], [96.0, 128.0]])
    hm, w = codec.encode(kpts, np.full(5, 2))
    np.testing.assert_array_equal(w, [0, 0, 0, 0, 1])
    assert (hm[:4] == 0).all() and hm[4].max() == pytest.approx(1.0)


def test_encode_partially_outside_window():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    # x = -20 -> int(-5 + 0.5) = int(-4.5) = -4 (truncation): the window reaches columns 0..2
    hm, w = codec.encode(np.array([[-20.0, 100.0]]), np.array([1]))
    assert w[0] == 1
    y = int(100 / 4 + 0.5)
    assert hm[0, y, 0] == pytest.approx(gauss(16), rel=1e-5)
    assert hm[0, y, 2] == pytest.approx(gauss(36), rel=1e-5)
    assert (hm[0, :, 3:] == 0).all()


def test_encode_weight_zero_iff_empty_map():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    xs = np.arange(-60.0, 260.0, 0.5)
    kpts = np.stack([xs, np.full_like(xs, 128.0)], axis=1)
    hm, w = codec.encode(kpts, np.ones(len(xs)))
    nonempty = hm.reshape(len(xs), -1).max(axis=1) > 0
    np.testing.assert_array_equal(w > 0, nonempty)
    # window [mu - 6, mu + 6] with mu = trunc(x / 4 + 0.5) must touch columns 0..47
    mu = np.trunc(xs / 4 + 0.5)
    np.testing.assert_array_equal(w > 0, (mu + 6 >= 0) & (mu - 6 <= 47))


def test_encode_unbiased_is_subpixel_full_map_gaussian():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA, unbiased=True)
    x, y = 101.3, 70.6
    hm, w = codec.encode(np.array([[x, y]]), np.array([1]))
    mx, my = x / 4, y / 4
    jj, ii = np.mgrid[0:64, 0:48]
    expected = np.exp(-((ii - mx) ** 2 + (jj - my) ** 2) / (2 * SIGMA ** 2))
    np.testing.assert_allclose(hm[0], expected, rtol=1e-5, atol=1e-7)
    assert w[0] == 1 and hm[0, 18, 25 + 8] > 1e-4  # not cut to a 3-sigma window


# ---------------------------------------------------------------------------- decode (official)
def test_decode_quarter_offset_toward_higher_neighbour():
    codec = HeatmapCodec((192, 256), (48, 64))
    hm = np.zeros((2, 3, 64, 48), dtype=np.float32)
    hm[0, 0, 20, 10] = 1.0
    hm[0, 0, 20, 9], hm[0, 0, 20, 11] = 0.5, 0.8  # right higher -> +0.25 in x
    hm[0, 0, 19, 10], hm[0, 0, 21, 10] = 0.9, 0.1  # up higher -> -0.25 in y
    hm[0, 1, 30, 30] = 0.7  # isolated peak: neighbours equal -> no offset
    hm[0, 2, 1, 10], hm[0, 2, 1, 11] = 0.9, 0.5  # y == 1 is on the border band: no offset
    hm[1, 0, 5, 46], hm[1, 0, 5, 45] = 0.6, 0.2  # x == W - 2: allowed, left higher -> -0.25
    hm[1, 1] = -1.0  # max <= 0 -> (0, 0) as the official get_max_preds
    hm[1, 2, 40, 2], hm[1, 2, 41, 2] = 0.3, 0.1
    coords, scores = codec.decode(hm)
    assert coords.shape == (2, 3, 2) and scores.shape == (2, 3)
    np.testing.assert_allclose(coords[0], [[10.25, 19.75], [30, 30], [10, 1]])
    np.testing.assert_allclose(coords[1], [[45.75, 5], [0, 0], [2, 40.25]])
    np.testing.assert_allclose(scores, [[1.0, 0.7, 0.9], [0.6, -1.0, 0.3]], rtol=1e-6)


def _reference_quarter_decode(hm: np.ndarray) -> np.ndarray:
    """Loop version of the official get_max_preds + quarter offset, written from the formula."""
    b, k, h, w = hm.shape
    out = np.zeros((b, k, 2))
    for n in range(b):
        for j in range(k):
            m = hm[n, j]
            py, px = np.unravel_index(np.argmax(m), m.shape)
            if m[py, px] <= 0:
                px = py = 0
            x, y = float(px), float(py)
            if 1 < px < w - 1 and 1 < py < h - 1:
                x += 0.25 * np.sign(m[py, px + 1] - m[py, px - 1])
                y += 0.25 * np.sign(m[py + 1, px] - m[py - 1, px])
            out[n, j] = x, y
    return out


def test_decode_matches_loop_reference_on_random_maps():
    rng = np.random.default_rng(0)
    hm = rng.normal(size=(4, 17, 64, 48)).astype(np.float32)
    hm[0, :, :, :3] += 10  # some maxima in the border band
    codec = HeatmapCodec((192, 256), (48, 64))
    coords, scores = codec.decode(hm)
    np.testing.assert_allclose(coords, _reference_quarter_decode(hm))
    np.testing.assert_allclose(scores, hm.reshape(4, 17, -1).max(-1))
    coords_t, scores_t = codec.decode(torch.from_numpy(hm))
    np.testing.assert_array_equal(coords_t, coords)
    np.testing.assert_array_equal(scores_t, scores)


def test_encode_decode_round_trip_within_quantisation():
    rng = np.random.default_rng(3)
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    kpts = rng.uniform([12, 12], [180, 244], size=(17, 2))
    hm, w = codec.encode(kpts, np.full(17, 2))
    coords, scores = codec.decode(hm[None])
    err = np.abs(coords[0] - kpts / 4)
    assert err.max() <= 0.5 + 1e-6
    np.testing.assert_allclose(coords[0], np.trunc(kpts / 4 + 0.5))  # symmetric peak: no quarter offset
    np.testing.assert_allclose(scores, 1.0)


# ---------------------------------------------------------------------------- DARK
def _reference_dark(hm: np.ndarray, kernel: int) -> np.ndarray:
    """Loop version of mmpose refine_keypoints_dark (pad + cv2.GaussianBlur + rescale + log + Newton step)."""
    b, k, h, w = hm.shape
    out = np.zeros((b, k, 2))
    border = (kernel - 1) // 2
    for n in range(b):
        for j in range(k):
            m = hm[n, j].astype(np.float64)
            py, px = np.unravel_index(np.argmax(m), m.shape)
            if m[py, px] <= 0:
                px = py = 0
            padded = np.zeros((h + 2 * border, w + 2 * border))
            padded[border:-border, border:-border] = m
            bl = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
            bl *= m.max() / bl.max()
            lg = np.log(np.maximum(bl, 1e-10))
            x, y = float(px), float(py)
            if 1 < px < w - 2 and 1 < py < h - 2:
                d = 0.5 * np.array([lg[py, px + 1] - lg[py, px - 1], lg[py + 1, px] - lg[py - 1, px]])
                dxx = 0.25 * (lg[py, px + 2] - 2 * lg[py, px] + lg[py, px - 2])
                dyy = 0.25 * (lg[py + 2, px] - 2 * lg[py, px] + lg[py - 2, px])
                dxy = 0.25 * (lg[py + 1, px + 1] - lg[py - 1, px + 1]
                              - lg[py + 1, px - 1] + lg[py - 1, px - 1])
                hess = np.array([[dxx, dxy], [dxy, dyy]])
                if np.linalg.det(hess) != 0:
                    off = -np.linalg.inv(hess) @ d
                    x, y = x + off[0], y + off[1]
            out[n, j] = x, y
    return out


def test_dark_matches_loop_reference():
    rng = np.random.default_rng(5)
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA, unbiased=True)
    assert codec.dark and codec.blur_kernel_size == 11
    kpts = rng.uniform([-10, -10], [200, 266], size=(2, 17, 2))
    hm = np.stack([codec.encode(p, np.full(17, 2))[0] for p in kpts])
    hm = hm + 0.05 * rng.random(hm.shape).astype(np.float32)  # break exact symmetry
    coords, scores = codec.decode(hm)
    np.testing.assert_allclose(coords, _reference_dark(hm, 11), atol=2e-4)
    np.testing.assert_allclose(scores, hm.reshape(2, 17, -1).max(-1))


@pytest.mark.parametrize("sigma,input_size,heatmap_size,kernel", [
    (2.0, (192, 256), (48, 64), 11),
    (3.0, (288, 384), (72, 96), 17),
])
def test_dark_unbiased_round_trip_subpixel(sigma, input_size, heatmap_size, kernel):
    rng = np.random.default_rng(7)
    codec = HeatmapCodec(input_size, heatmap_size, sigma=sigma, unbiased=True, dark=True)
    assert codec.blur_kernel_size == kernel
    stride = input_size[0] / heatmap_size[0]
    margin = 4 * sigma * stride
    kpts = rng.uniform([margin, margin], [input_size[0] - margin, input_size[1] - margin], size=(17, 2))
    hm, _ = codec.encode(kpts, np.ones(17))
    coords, _ = codec.decode(torch.from_numpy(hm[None]))
    assert np.abs(coords[0] - kpts / stride).max() < 0.05
    # the quarter offset alone is much coarser
    coarse, _ = codec.decode(hm[None], dark=False)
    assert np.abs(coarse[0] - kpts / stride).max() > 0.05


def test_dark_flag_independent_of_encoding():
    codec = HeatmapCodec(unbiased=False, dark=True)
    assert codec.dark and not codec.unbiased
    codec = HeatmapCodec(unbiased=True, dark=False)
    assert not codec.dark


# ---------------------------------------------------------------------------- back-projection
def test_heatmap_to_image_centre_and_corners():
    codec = HeatmapCodec((192, 256), (48, 64))
    center, size = box_to_center_size((100, 50, 60, 120), 0.75)
    centers = np.stack([center, center + 10])
    sizes = np.stack([size, size * 2])
    coords = np.array([[[24.0, 32.0], [0.0, 0.0], [48.0, 64.0]]] * 2)
    out = codec.heatmap_to_image(coords, centers, sizes)
    assert out.shape == (2, 3, 2)
    for i in range(2):
        np.testing.assert_allclose(out[i, 0], centers[i], atol=1e-3)
        np.testing.assert_allclose(out[i, 1], centers[i] - sizes[i] / 2, atol=1e-3)
        np.testing.assert_allclose(out[i, 2], centers[i] + sizes[i] / 2, atol=1e-3)
    out_t = codec.heatmap_to_image(*(torch.from_numpy(a) for a in (coords, centers, sizes)))
    np.testing.assert_allclose(out_t, out)


def test_image_to_heatmap_to_image_round_trip():
    rng = np.random.default_rng(11)
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    center, size = box_to_center_size((300, 200, 90, 180), 0.75)
    img_kpts = center + rng.uniform(-0.4, 0.4, size=(17, 2)) * size
    crop_kpts = affine_points(img_kpts, get_affine_transform(center, size, 0.0, codec.input_size))
    hm, w = codec.encode(crop_kpts, np.full(17, 2))
    coords, _ = codec.decode(hm[None])
    back = codec.heatmap_to_image(coords, center[None], size[None])[0]
    px_per_hm = size[0] / 48
    assert np.abs(back - img_kpts).max() <= 0.5 * px_per_hm + 1e-6


# ---------------------------------------------------------------------------- flip
def test_flip_back_twice_without_shift_is_identity():
    x = torch.randn(2, 17, 8, 6)
    once = flip_back(x, COCO_FLIP_PAIRS, shift=False)
    torch.testing.assert_close(once[:, 0], x[:, 0].flip(-1))
    torch.testing.assert_close(once[:, 1], x[:, 2].flip(-1))
    torch.testing.assert_close(once[:, 16], x[:, 15].flip(-1))
    torch.testing.assert_close(flip_back(once, COCO_FLIP_PAIRS, shift=False), x)


def test_flip_back_shift_and_numpy():
    x = torch.randn(1, 17, 5, 7)
    shifted = flip_back(x, COCO_FLIP_PAIRS, shift=True)
    plain = flip_back(x, COCO_FLIP_PAIRS, shift=False)
    torch.testing.assert_close(shifted[..., 1:], plain[..., :-1])
    torch.testing.assert_close(shifted[..., 0], plain[..., 0])
    assert x.shape == shifted.shape
    np.testing.assert_array_equal(flip_back(x.numpy(), COCO_FLIP_PAIRS, shift=True), shifted.numpy())


def test_flip_back_of_flipped_input_heatmap_matches_with_one_pixel_shift():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=SIGMA)
    rng = np.random.default_rng(2)
    # crop keypoints on the heatmap grid (x / 4 integer), well inside
    kpts = np.stack([4.0 * rng.integers(8, 40, 17), rng.uniform(40, 216, 17)], axis=1)
    vis = np.full(17, 2)
    hm, _ = codec.encode(kpts, vis)
    fk, fv = flip_keypoints(kpts, vis, 192, COCO_FLIP_PAIRS)  # keypoints of the flipped crop
    hm_f, _ = codec.encode(fk, fv)
    back = flip_back(torch.from_numpy(hm_f[None]), COCO_FLIP_PAIRS, shift=True)[0].numpy()
    np.testing.assert_allclose(back, hm, atol=1e-7)
    # without the shift the peaks sit exactly one heatmap pixel to the left
    no_shift = flip_back(torch.from_numpy(hm_f[None]), COCO_FLIP_PAIRS, shift=False)[0].numpy()
    np.testing.assert_allclose(no_shift[:, :, :-1], hm[:, :, 1:], atol=1e-7)


def test_flip_keypoints_consistent_with_image_flip():
    rng = np.random.default_rng(4)
    width, height = 37, 23
    kpts = np.stack([rng.integers(0, width, 17), rng.integers(0, height, 17)], axis=1).astype(np.float64)
    vis = rng.integers(0, 3, 17)
    img = np.zeros((height, width, 17), dtype=np.uint8)
    img[kpts[:, 1].astype(int), kpts[:, 0].astype(int), np.arange(17)] = 255
    flipped = img[:, ::-1]
    kpts_before, vis_before = kpts.copy(), vis.copy()
    fk, fv = flip_keypoints(kpts, vis, width, COCO_FLIP_PAIRS)
    perm = list(range(17))
    for a, b in COCO_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    for j in range(17):
        # keypoint j of the flipped image is the mirrored partner keypoint
        assert flipped[int(fk[j, 1]), int(fk[j, 0]), perm[j]] == 255
        assert fv[j] == vis[perm[j]]
    np.testing.assert_allclose(fk[:, 0], width - 1 - kpts[perm, 0])
    np.testing.assert_allclose(fk[:, 1], kpts[perm, 1])
    np.testing.assert_array_equal(kpts, kpts_before)  # inputs untouched
    np.testing.assert_array_equal(vis, vis_before)


@pytest.mark.parametrize("unbiased", [False, True])
def test_flip_test_shift_reduces_the_bias_of_the_average(unbiased):
    """A crop flip maps x to W - 1 - x: the flipped-back map sits 1 - 1/stride px left of the original, so the
    1-px shift (0.125 px residual at stride 4) beats no shift (0.375 px), for official and DARK targets alike."""
    codec = HeatmapCodec(input_size=(72, 96), heatmap_size=(18, 24), sigma=2.0, unbiased=unbiased)
    rng = np.random.default_rng(0)
    kpts = np.c_[rng.uniform(12, 60, 17), rng.uniform(12, 84, 17)]
    vis = np.full(17, 2)
    target, _ = codec.encode(kpts, vis)
    mirrored = np.c_[72 - 1 - kpts[:, 0], kpts[:, 1]][[0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]
    target_flipped, _ = codec.encode(mirrored, vis)
    errors = {}
    for shift in (False, True):
        avg = 0.5 * (torch.from_numpy(target) + flip_back(torch.from_numpy(target_flipped)[None], COCO_FLIP_PAIRS,
                                                          shift=shift)[0])
        coords, _ = codec.decode(avg[None], dark=True)
        errors[shift] = np.abs(coords[0, :, 0] * codec.stride[0] - kpts[:, 0]).mean()
    assert errors[True] < errors[False]
    assert errors[True] < 0.3 * codec.stride[0]

"""Top-down crop geometry: box -> centre/size, the official 3-point affine transform, crops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrformer.data.geometry import affine_points, box_to_center_size, get_affine_transform, warp_to_crop


def _rot(theta_deg: float) -> np.ndarray:
    t = math.radians(theta_deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _expected_forward(center, size_w, rotation_deg, output_size) -> np.ndarray:
    """dst = out_centre + (out_w / w) * R(-theta) (src - center), written out independently."""
    s = output_size[0] / size_w
    a = s * _rot(-rotation_deg)
    out_c = np.array([output_size[0] / 2, output_size[1] / 2])
    return np.concatenate([a, (out_c - a @ np.asarray(center, dtype=np.float64))[:, None]], axis=1)


# ---------------------------------------------------------------------------- box_to_center_size
def test_box_tall_is_widened_to_aspect_and_padded():
    center, size = box_to_center_size((10.0, 20.0, 30.0, 100.0), aspect_ratio=0.75)
    np.testing.assert_allclose(center, [10 + 15, 20 + 50])
    np.testing.assert_allclose(size, [0.75 * 100 * 1.25, 100 * 1.25])
    assert center.shape == (2,) and size.shape == (2,)


def test_box_wide_is_heightened_to_aspect_and_padded():
    center, size = box_to_center_size([0.0, 0.0, 200.0, 100.0], aspect_ratio=192 / 256)
    np.testing.assert_allclose(center, [100.0, 50.0])
    np.testing.assert_allclose(size, [200 * 1.25, 200 / 0.75 * 1.25])
    assert size[0] / size[1] == pytest.approx(0.75)


@pytest.mark.parametrize("box", [(5, 5, 10, 10), (3.5, -2, 40, 7), (0, 0, 1, 300), (1, 2, 75, 100)])
@pytest.mark.parametrize("aspect", [0.75, 1.0, 288 / 384, 4 / 3])
def test_box_aspect_and_padding_invariants(box, aspect):
    center, size = box_to_center_size(np.array(box, dtype=np.float64), aspect, padding=1.5)
    x, y, w, h = box
    assert size[0] / size[1] == pytest.approx(aspect)
    # the padded box contains the original box grown by exactly the padding factor along the binding axis
    assert size[0] >= w * 1.5 - 1e-9 and size[1] >= h * 1.5 - 1e-9
    assert min(size[0] / (w * 1.5), size[1] / (h * 1.5)) == pytest.approx(1.0)
    np.testing.assert_allclose(center, [x + w / 2, y + h / 2])


# ---------------------------------------------------------------------------- affine transform
def test_affine_unrotated_maps_crop_corners_and_centre():
    center, size, out = np.array([120.0, 80.0]), np.array([96.0, 128.0]), (192, 256)
    m = get_affine_transform(center, size, 0.0, out)
    assert m.shape == (2, 3) and m.dtype == np.float64
    pts = np.array([center, center - size / 2, center + size / 2, center + [size[0] / 2, 0]])
    np.testing.assert_allclose(affine_points(pts, m), [[96, 128], [0, 0], [192, 256], [192, 128]], atol=1e-4)


@pytest.mark.parametrize("rotation", [0.0, 17.0, -35.5, 90.0, 180.0])
def test_affine_matches_similarity_formula(rotation):
    center, size, out = np.array([321.7, 145.2]), np.array([150.0, 200.0]), (192, 256)
    m = get_affine_transform(center, size, rotation, out)
    np.testing.assert_allclose(m, _expected_forward(center, size[0], rotation, out), atol=2e-4, rtol=1e-5)


def test_rotation_maps_centre_to_output_centre_and_rotates_points():
    center, size, out = np.array([200.0, 150.0]), np.array([120.0, 160.0]), (48, 64)
    theta = 30.0
    m = get_affine_transform(center, size, theta, out)
    out_c = np.array([24.0, 32.0])
    np.testing.assert_allclose(affine_points(center[None], m)[0], out_c, atol=1e-4)
    # a point at angle a around the centre lands at angle a - theta (y-down coordinates), radius scaled
    scale = out[0] / size[0]
    for a_deg, r in [(0.0, 40.0), (75.0, 25.0), (200.0, 10.0)]:
        a = math.radians(a_deg)
        p = center + r * np.array([math.cos(a), math.sin(a)])
        q = affine_points(p[None], m)[0] - out_c
        assert np.hypot(*q) == pytest.approx(r * scale, abs=1e-4)
        ang = math.degrees(math.atan2(q[1], q[0]))
        assert (ang - (a_deg - theta) + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-3)
    # 90 degrees: what is right of the centre in the image ends up above the crop centre
    m90 = get_affine_transform(center, size, 90.0, out)
    q = affine_points((center + [30.0, 0.0])[None], m90)[0]
    np.testing.assert_allclose(q, out_c + [0.0, -30.0 * scale], atol=1e-4)


@pytest.mark.parametrize("rotation", [0.0, 23.0, -40.0])
def test_affine_round_trip_is_identity(rotation):
    rng = np.random.default_rng(0)
    center, size, out = np.array([812.3, 433.9]), np.array([231.0, 308.0]), (192, 256)
    fwd = get_affine_transform(center, size, rotation, out)
    inv = get_affine_transform(center, size, rotation, out, inverse=True)
    pts = rng.uniform(0, 1000, size=(50, 2))
    np.testing.assert_allclose(affine_points(affine_points(pts, fwd), inv), pts, atol=1e-6, rtol=0)
    crop_pts = rng.uniform(0, 256, size=(50, 2))
    np.testing.assert_allclose(affine_points(affine_points(crop_pts, inv), fwd), crop_pts, atol=1e-6, rtol=0)


def test_affine_points_shapes():
    m = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    np.testing.assert_allclose(affine_points(np.array([[1.0, 1.0], [0.0, 2.0]]), m), [[3.0, 2.0], [1.0, 5.0]])
    assert affine_points(np.zeros((4, 5, 2)), m).shape == (4, 5, 2)


# ---------------------------------------------------------------------------- warp_to_crop
def _image(h=80, w=100):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_warp_unit_scale_is_a_slice():
    img = _image()
    crop = warp_to_crop(img, (50.0, 40.0), (20.0, 30.0), 0.0, (20, 30))
    assert crop.shape == (30, 20, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, img[40 - 15:40 + 15, 50 - 10:50 + 10])


def test_warp_outside_is_black():
    img = _image()
    crop = warp_to_crop(img, (0.0, 0.0), (20.0, 20.0), 0.0, (20, 20))
    assert (crop[:10, :] == 0).all() and (crop[:, :10] == 0).all()
    np.testing.assert_array_equal(crop[10:, 10:], img[:10, :10])


def test_warp_rotation_90_direction():
    img = _image()
    crop = warp_to_crop(img, (50.0, 40.0), (20.0, 20.0), 90.0, (20, 20))
    # dst = c_out + R(-90) (src - c): dst_x = 10 + (sy - 40), dst_y = 10 - (sx - 50)
    expected = np.empty_like(crop)
    for dy in range(20):
        for dx in range(20):
            expected[dy, dx] = img[dx + 30, 60 - dy]
    np.testing.assert_array_equal(crop, expected)


def test_warp_rotation_180_is_point_mirror():
    img = _image()
    crop = warp_to_crop(img, (50.0, 40.0), (20.0, 30.0), 180.0, (20, 30))
    # sx = 60 - dx, sy = 55 - dy
    np.testing.assert_array_equal(crop, img[26:56, 41:61][::-1, ::-1])

"""hrformer.visualize: skeleton drawing, prediction/ground-truth panels, undoing the input normalisation."""

from __future__ import annotations

import numpy as np
import torch

from hrformer.data.coco_keypoints import crop_and_normalize
from hrformer.data.common import IMAGENET_MEAN, IMAGENET_STD
from hrformer.visualize import LEFT_COLOR, PANEL_GAP, RIGHT_COLOR, denormalize, draw_skeleton, pose_panel

L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = 5, 6, 7, 8  # COCO_SKELETON links 5-7 and 6-8


def two_joints(a: int, b: int, pa=(20.0, 50.0), pb=(80.0, 50.0)) -> np.ndarray:
    kpts = np.full((17, 2), np.nan)
    kpts[a], kpts[b] = pa, pb
    return kpts


def test_limb_is_drawn_between_its_joints_only():
    image = np.zeros((100, 100, 3), np.uint8)
    out = draw_skeleton(image, two_joints(L_SHOULDER, L_ELBOW), np.ones(17), radius=3, thickness=2)
    assert not image.any()  # not drawn in place
    assert all(out[50, x].any() for x in range(20, 81))  # along the limb and on both joints
    assert tuple(out[50, 50]) == LEFT_COLOR
    changed = out.any(-1)
    assert not changed[:44].any() and not changed[57:].any()  # nothing far from the limb
    assert not changed[:, :15].any() and not changed[:, 86:].any()

    right = draw_skeleton(image, two_joints(R_SHOULDER, R_ELBOW), np.ones(17), radius=3, thickness=2)
    assert tuple(right[50, 50]) == RIGHT_COLOR != LEFT_COLOR


def test_joints_below_the_threshold_are_not_drawn():
    image = np.zeros((100, 100, 3), np.uint8)
    scores = np.ones(17)
    scores[L_ELBOW] = 0.1
    out = draw_skeleton(image, two_joints(L_SHOULDER, L_ELBOW), scores, thr=0.3, radius=3, thickness=2)
    changed = out.any(-1)
    assert changed[50, 20]                    # the shoulder dot
    assert not changed[:, 30:].any()          # neither the elbow nor the limb
    # visibility flags work as scores: v = 0 not drawn
    vis = np.zeros(17)
    vis[L_SHOULDER] = vis[L_ELBOW] = 2
    assert draw_skeleton(image, two_joints(L_SHOULDER, L_ELBOW), vis)[50, 50].any()
    assert not draw_skeleton(image, two_joints(L_SHOULDER, L_ELBOW), np.zeros(17)).any()


def test_denormalize_inverts_the_input_normalisation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    normalized = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    tensor = torch.from_numpy(normalized.transpose(2, 0, 1))
    np.testing.assert_array_equal(denormalize(tensor), image)
    np.testing.assert_array_equal(denormalize(tensor.numpy()), image)
    # the datamodule's crop with an identity geometry (centre at w/2, h/2; region = output size)
    crop = crop_and_normalize(image, (16.0, 12.0), (32.0, 24.0), (32, 24))
    np.testing.assert_array_equal(denormalize(crop), image)


def test_pose_panel_prediction_beside_ground_truth():
    image = np.zeros((64, 48, 3), np.uint8)
    kpts = two_joints(L_SHOULDER, L_ELBOW, (10.0, 30.0), (35.0, 40.0))
    gt = np.zeros((17, 3))
    gt[:, :2] = np.nan_to_num(kpts)
    gt[[L_SHOULDER, L_ELBOW], 2] = 2
    panel = pose_panel(image, gt[:, :2], (gt[:, 2] > 0).astype(float), gt, min_height=128)
    assert panel.shape == (128, 2 * 96 + PANEL_GAP, 3)  # enlarged x2
    np.testing.assert_array_equal(panel[:, :96], panel[:, 96 + PANEL_GAP:])
    assert panel[:, :96].any()
    only_pred = pose_panel(image, gt[:, :2], np.ones(17), np.zeros((17, 3)))  # detections: no ground truth
    assert only_pred.shape == (64, 48, 3)

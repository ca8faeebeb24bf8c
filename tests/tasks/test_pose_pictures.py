"""PoseTask.pictures: validation crops with the predicted skeleton beside the ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from hrformer.codecs.heatmap import HeatmapCodec
from hrformer.data.coco_keypoints import TopDownCOCODataset
from hrformer.tasks.pose import PoseTask
from hrformer.visualize import PANEL_GAP, denormalize
from tests.conftest import SHARED

TINY = SHARED / "data" / "coco_keypoints_tiny"


@pytest.fixture(scope="module")
def batch():
    codec = HeatmapCodec((48, 64), (12, 16), sigma=1.0)
    dataset = TopDownCOCODataset(TINY / "annotations" / "person_keypoints_tiny.json", TINY / "images" / "val2017",
                                 codec, train=False)
    return codec, default_collate([dataset[i] for i in range(4)])


def test_predictions_equal_to_the_ground_truth_give_identical_halves(batch):
    codec, batch = batch
    gt = batch["keypoints"].numpy()
    outputs = {"keypoints": gt[:, :, :2].copy(), "scores": (gt[:, :, 2] > 0).astype(np.float32)}
    pictures = PoseTask(codec).pictures(batch, outputs, max_images=3, min_height=128)
    assert len(pictures) == 3 and len({name for name, _ in pictures}) == 3
    w = 48 * 2  # 48x64 crops enlarged x2 to reach 128 px
    for i, (name, image) in enumerate(pictures):
        assert f"img{int(batch['image_id'][i])}_ann{int(batch['ann_id'][i])}" in name
        assert image.dtype == np.uint8 and image.shape == (128, 2 * w + PANEL_GAP, 3)
        pred, truth = image[:, :w], image[:, w + PANEL_GAP:]
        np.testing.assert_array_equal(pred, truth)
        plain = cv2.resize(denormalize(batch["image"][i]), (w, 128), interpolation=cv2.INTER_LINEAR)
        assert (pred != plain).any()  # the skeleton is drawn


def test_detected_boxes_show_the_prediction_only(batch):
    codec, batch = batch
    det = {**batch, "keypoints": torch.zeros_like(batch["keypoints"]), "ann_id": torch.full((4,), -1)}
    outputs = {"keypoints": batch["keypoints"].numpy()[:, :, :2], "scores": np.ones((4, 17), np.float32)}
    pictures = PoseTask(codec).pictures(det, outputs, max_images=8)
    assert len(pictures) == 4
    assert all(image.shape == (256, 48 * 4, 3) and "det" in name for name, image in pictures)

"""COCO keypoints datamodule on real data (../shared/data/coco_keypoints_tiny) and on broken copies of it."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from hrformer.codecs.heatmap import HeatmapCodec
from hrformer.data.coco_keypoints import COCOKeypointsDataModule, TopDownCOCODataset
from hrformer.tasks.pose import PoseTask

ANN = "annotations/person_keypoints_tiny.json"
DET = "person_detection_results/test_coco_det_AP_H_56.json"
IMAGES = "images/val2017"


@pytest.fixture(scope="module")
def tiny(shared_dir):
    return shared_dir / "data" / "coco_keypoints_tiny"


@pytest.fixture
def codec():
    return HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)


@pytest.fixture
def broken(tiny, tmp_path):
    """A writable copy of the tiny set, to break."""
    root = tmp_path / "coco"
    shutil.copytree(tiny, root)
    return root


def dataset(root, codec, **kw):
    return TopDownCOCODataset(root / ANN, root / IMAGES, codec, **kw)


def test_gt_boxes_skip_people_without_keypoints(tiny, codec):
    ann = json.loads((tiny / ANN).read_text())
    labelled = [a for a in ann["annotations"] if a["num_keypoints"] > 0]
    ds = dataset(tiny, codec)
    assert len(ds) == len(labelled) == 12
    assert ds.skipped == {"no labelled keypoints": 2}
    sample = ds[0]
    assert sample["image"].shape == (3, 256, 192) and sample["target"].shape == (17, 64, 48)
    assert sample["target_weight"].shape == (17,)
    # ImageNet-normalised: roughly zero-mean, unit-scale values
    assert -3 < sample["image"].mean() < 3 and sample["image"].std() > 0.2


def test_detected_boxes_and_score_threshold(tiny, codec):
    dets = json.loads((tiny / DET).read_text())
    ds = dataset(tiny, codec, bbox_source="det", det_file=tiny / DET)
    assert len(ds) == len(dets) == 118
    thr = 0.5
    ds_thr = dataset(tiny, codec, bbox_source="det", det_file=tiny / DET, det_score_thr=thr)
    assert len(ds_thr) == sum(d["score"] >= thr for d in dets)
    assert ds_thr.skipped["detection score below threshold"] == sum(d["score"] < thr for d in dets)
    assert {s.box_score for s in ds_thr.instances} <= {d["score"] for d in dets}


def test_encode_decode_ground_truth_gives_high_oks_ap(tiny, codec):
    """Targets encoded from GT keypoints, decoded by the evaluation path (back-projection, COCOeval): AP >= 0.95."""
    ds = dataset(tiny, codec)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    task = PoseTask(codec, ann_file=tiny / ANN, flip_test=False)
    task.validation_step(lambda images: batch["target"], batch)
    metrics = task.compute_metrics()
    assert metrics["val/AP"] >= 0.95
    # and the flip test path is consistent: the heatmaps of the flipped crop, flipped back, land on the same joints
    flipped = dataset(tiny, codec)
    imgs = batch["image"]
    task_flip = PoseTask(codec, ann_file=tiny / ANN, flip_test=True, shift_heatmap=False)
    heat = task_flip.predict_heatmaps(lambda x: batch["target"] if x.data_ptr() == imgs.data_ptr()
                                      else batch["target"].flip(-1)[:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11,
                                                                        14, 13, 16, 15]], imgs)
    torch.testing.assert_close(heat, batch["target"])
    assert len(flipped) == len(ds)


def test_training_samples_are_augmented_but_consistent(tiny, codec):
    ds = dataset(tiny, codec, train=True)
    torch.manual_seed(0)
    a, b = ds[0], ds[0]
    assert not torch.equal(a["image"], b["image"])  # random flip/scale/rotation/photometric
    for s in (a, b):  # weighted joints have (part of) a Gaussian on the map, unweighted ones an empty map
        w = s["target_weight"] > 0
        peaks = s["target"].flatten(1).max(1).values
        assert w.any() and (peaks[w] > 0).all() and (peaks[~w] == 0).all()
        assert peaks.max() == pytest.approx(1.0)


def test_missing_image_is_skipped_and_counted(broken, codec, caplog):
    (broken / IMAGES / "000000040083.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        ds = dataset(broken, codec)
    ann = json.loads((broken / ANN).read_text())
    lost = [a for a in ann["annotations"] if a["image_id"] == 40083]
    assert ds.skipped["image file missing"] == len(lost)
    assert len(ds) == 12 - sum(a["num_keypoints"] > 0 for a in lost)
    assert "000000040083.jpg" in caplog.text


@pytest.mark.parametrize("content", ["", '{"images": [', "not json at all"])
def test_malformed_json_names_the_file(broken, codec, content):
    (broken / ANN).write_text(content)
    with pytest.raises(ValueError, match="person_keypoints_tiny.json"):
        dataset(broken, codec)


def test_json_without_annotations_names_the_file(broken, codec):
    (broken / ANN).write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="person_keypoints_tiny.json.*annotations"):
        dataset(broken, codec)


def test_bad_boxes(broken, codec):
    ann = json.loads((broken / ANN).read_text())
    people = [a for a in ann["annotations"] if a["num_keypoints"] > 0]
    img = {i["id"]: i for i in ann["images"]}[people[0]["image_id"]]
    people[0]["bbox"] = [img["width"] - 10, 5, 400, 100]  # partly outside: clipped, kept
    people[1]["bbox"] = [img["width"] + 50, 10, 40, 40]   # wholly outside: skipped
    people[2]["bbox"] = [10, 10, 0, 25]                    # zero area: skipped
    (broken / ANN).write_text(json.dumps(ann))
    ds = dataset(broken, codec)
    assert ds.skipped["zero-area or out-of-image box"] == 2
    assert len(ds) == 10
    kept = next(i for i in ds.instances if i.ann_id == people[0]["id"])
    assert kept.center[0] <= img["width"]  # the crop centre lies inside the image after clipping


def test_corrupt_jpeg_names_file_and_annotation(broken, codec):
    path = broken / IMAGES / "000000196141.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    ds = dataset(broken, codec)
    index = next(i for i, inst in enumerate(ds.instances) if inst.image_id == 196141)
    with pytest.raises(OSError, match=r"000000196141\.jpg.*annotation id \d+"):
        ds[index]


def test_corrupt_jpeg_in_a_worker_keeps_the_file_name(broken, codec):
    path = broken / IMAGES / "000000196141.jpg"
    path.write_bytes(b"\xff\xd8\xff garbage")
    dm = COCOKeypointsDataModule(str(broken), codec, batch_size=64, num_workers=1, val_ann=ANN, val_images=IMAGES)
    dm.setup("validate")
    with pytest.raises(Exception, match=r"000000196141\.jpg"):
        next(iter(dm.val_dataloader()))


def test_bad_bbox_source_is_an_error(tiny, codec):
    with pytest.raises(ValueError, match="bbox_source"):
        dataset(tiny, codec, bbox_source="detector")
    with pytest.raises(ValueError, match="det_file"):
        dataset(tiny, codec, bbox_source="det")


def test_keypoint_count_mismatch_names_annotation(broken, codec):
    ann = json.loads((broken / ANN).read_text())
    ann["annotations"][0]["keypoints"] = ann["annotations"][0]["keypoints"][:-3]
    (broken / ANN).write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=str(ann["annotations"][0]["id"])):
        dataset(broken, codec)


def test_area_is_crop_area(tiny, codec):
    ds = dataset(tiny, codec)
    s = ds[0]
    assert s["area"] == pytest.approx(float(np.prod(ds.instances[0].size)))

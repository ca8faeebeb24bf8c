"""Segmentation metrics against an independent numpy computation, mmseg's exclusion rules, DDP reduction."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from hrformer.evaluation.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    metrics_from_confusion,
    write_class_table,
)

IGNORE = 255


def numpy_reference(preds: list[np.ndarray], gts: list[np.ndarray], num_classes: int) -> dict:
    """mIoU / mAcc / aAcc pooled over all images, by per-class boolean masks (no bincount, no torch).

    Pixels with ground truth 255 are dropped; a class absent from both prediction and ground truth is left out
    of mIoU, a class absent from the ground truth out of mAcc.
    """
    pred = np.concatenate([p.reshape(-1) for p in preds]).astype(np.int64)
    gt = np.concatenate([g.reshape(-1) for g in gts]).astype(np.int64)
    keep = gt != IGNORE
    pred, gt = pred[keep], gt[keep]
    ious, accs = [], []
    for c in range(num_classes):
        inter = np.sum((pred == c) & (gt == c))
        union = np.sum((pred == c) | (gt == c))
        if union > 0:
            ious.append(inter / union)
        if np.sum(gt == c) > 0:
            accs.append(inter / np.sum(gt == c))
    return {"mIoU": float(np.mean(ious)), "mAcc": float(np.mean(accs)), "aAcc": float(np.mean(pred == gt)),
            "n_iou": len(ious), "n_acc": len(accs)}


def random_maps(rng: np.random.Generator, shape, num_classes: int, ignore_frac: float = 0.1):
    gt = rng.integers(0, num_classes, shape)
    gt[rng.random(shape) < ignore_frac] = IGNORE
    pred = np.where(rng.random(shape) < 0.6, np.where(gt == IGNORE, 0, gt), rng.integers(0, num_classes, shape))
    return pred, gt


def test_pooled_metrics_equal_numpy_reference():
    rng = np.random.default_rng(0)
    metric = SegmentationMetrics(num_classes=7)
    preds, gts = [], []
    for shape in [(2, 17, 23), (1, 31, 9), (3, 8, 8)]:
        pred, gt = random_maps(rng, shape, 7)
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        preds.append(pred)
        gts.append(gt)
    ours, ref = metric.compute(), numpy_reference(preds, gts, 7)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12)


def test_absent_classes_are_excluded_and_false_positives_count():
    # classes 0..4; class 3 in neither map (excluded), class 4 only predicted (IoU 0 counted, Acc undefined)
    gt = torch.tensor([[0, 0, 1, 1, 2, 2, IGNORE, IGNORE]])
    pred = torch.tensor([[0, 0, 1, 4, 2, 2, 3, 1]])  # predictions on ignored pixels do not count
    metric = SegmentationMetrics(num_classes=5)
    metric.update(pred, gt)
    result = metric.compute()
    iou, acc = result["IoU"], result["Acc"]
    assert np.isnan(iou[3]) and np.isnan(acc[3])
    assert iou[4] == 0.0 and np.isnan(acc[4])
    assert iou[:3] == pytest.approx([1.0, 0.5, 1.0]) and acc[:3] == pytest.approx([1.0, 0.5, 1.0])
    assert result["mIoU"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert result["mAcc"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert result["aAcc"] == pytest.approx(5 / 6)


def test_whole_dataset_pooling_differs_from_averaging_images():
    """Two images: pooled confusion matrix, not the mean of per-image mIoUs."""
    metric = SegmentationMetrics(num_classes=2)
    a_pred, a_gt = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1])
    b_pred, b_gt = torch.tensor([1] * 8), torch.tensor([1] * 7 + [0])
    per_image = []
    for p, g in ((a_pred, a_gt), (b_pred, b_gt)):
        m = SegmentationMetrics(num_classes=2)
        m.update(p, g)
        per_image.append(m.compute()["mIoU"])
        metric.update(p, g)
    pooled = metric.compute()["mIoU"]
    ref = numpy_reference([a_pred.numpy(), b_pred.numpy()], [a_gt.numpy(), b_gt.numpy()], 2)["mIoU"]
    assert pooled == pytest.approx(ref)
    assert abs(pooled - np.mean(per_image)) > 0.05


def test_per_class_iou_equals_torchmetrics_jaccard():
    rng = np.random.default_rng(1)
    pred, gt = random_maps(rng, (4, 20, 20), 6, ignore_frac=0.2)
    metric = SegmentationMetrics(num_classes=6)
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
    tm = MulticlassJaccardIndex(num_classes=6, ignore_index=IGNORE, average="none")
    expected = tm(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    assert metric.compute()["IoU"] == pytest.approx(expected, abs=1e-6)


def test_confusion_matrix_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match=r"\[9\]"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 9]), num_classes=5)
    with pytest.raises(ValueError, match="predicted"):
        confusion_matrix(torch.tensor([0, 7]), torch.tensor([0, 1]), num_classes=5)
    assert confusion_matrix(torch.tensor([3, 1]), torch.tensor([IGNORE, 1]), 5).sum() == 1


def test_no_valid_pixel_gives_nan():
    result = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64))
    assert all(math.isnan(result[k]) for k in ("mIoU", "mAcc", "aAcc"))


def test_reduction_over_ranks_equals_one_process():
    """merge_state applies the metric's dist_reduce_fx ("sum"), the reduction DDP sync uses."""
    rng = np.random.default_rng(2)
    halves = [random_maps(rng, (2, 16, 16), 5) for _ in range(2)]
    ranks = [SegmentationMetrics(num_classes=5) for _ in range(2)]
    single = SegmentationMetrics(num_classes=5)
    for m, (p, g) in zip(ranks, halves, strict=True):
        m.update(torch.from_numpy(p), torch.from_numpy(g))
        single.update(torch.from_numpy(p), torch.from_numpy(g))
    ranks[0].merge_state(ranks[1])
    assert torch.equal(ranks[0].compute()["confmat"], single.compute()["confmat"])
    ref = numpy_reference([h[0] for h in halves], [h[1] for h in halves], 5)
    assert ranks[0].compute()["mIoU"] == pytest.approx(ref["mIoU"])


def test_class_table(tmp_path):
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, IGNORE]))
    result = metric.compute()
    path = write_class_table(tmp_path / "t.csv", ["a", "b", "c"], result)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["class_id", "name", "IoU", "Acc", "gt_pixels", "pred_pixels"]
    assert rows[1] == ["0", "a", "0.500000", "1.000000", "1", "2"]
    assert rows[2] == ["1", "b", "0.500000", "0.500000", "2", "1"]
    assert rows[3] == ["2", "c", "", "", "0", "0"]  # absent from both (prediction on an ignored pixel)
    assert rows[4][:3] == ["mean", "", "0.500000"] and rows[5][:3] == ["all", "aAcc", f"{2 / 3:.6f}"]


def _ddp_worker(rank: int, world: int, port: int, data: list, out: dict) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metric = SegmentationMetrics(num_classes=5)
        pred, gt = data[rank]
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        result = metric.compute()
        out[rank] = (result["mIoU"], result["confmat"].numpy())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_sum(tmp_path):
    import socket

    import torch.multiprocessing as mp

    rng = np.random.default_rng(3)
    data = [random_maps(rng, (2, 12, 12), 5), random_maps(rng, (1, 30, 7), 5)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, port, data, out), nprocs=2, join=True)
    ref = numpy_reference([d[0] for d in data], [d[1] for d in data], 5)
    assert out[0][0] == pytest.approx(ref["mIoU"]) and out[1][0] == pytest.approx(ref["mIoU"])
    assert np.array_equal(out[0][1], out[1][1])

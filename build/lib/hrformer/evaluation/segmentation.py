"""Semantic segmentation metrics from one confusion matrix: mIoU, mAcc, aAcc and the per-class table.

Conventions (mmsegmentation's, which the HRNet / HRFormer papers report):

* pixels whose ground truth is ``ignore_index`` (255) are left out entirely (their prediction is not counted);
* the confusion matrix ``M`` has the ground truth on the rows and the prediction on the columns, summed over
  the whole validation set (``M[g, p]`` = number of pixels of class ``g`` predicted as ``p``);
* ``IoU_c = M[c, c] / (sum_p M[c, p] + sum_g M[g, c] - M[c, c])``; NaN when the class is absent from both the
  prediction and the ground truth (union 0); a class predicted but absent from the ground truth has IoU 0;
* ``Acc_c = M[c, c] / sum_p M[c, p]`` (recall); NaN when the class is absent from the ground truth;
* ``mIoU`` / ``mAcc`` = mean over the classes whose value is not NaN; ``aAcc = trace(M) / sum(M)``.

:class:`SegmentationMetrics` keeps ``M`` as a ``torchmetrics`` sum state, so under DDP the matrices of all ranks
are added before anything is computed (the only reduction that is exact for these metrics).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics import Metric

__all__ = ["SegmentationMetrics", "confusion_matrix", "metrics_from_confusion", "write_class_table"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """(C, C) int64 counts, ground truth on the rows, prediction on the columns.

    ``pred`` and ``target`` are integer tensors of the same shape (any number of dims).  Pixels with
    ``target == ignore_index`` are dropped; any other target outside ``[0, C)`` or prediction outside
    ``[0, C)`` raises ``ValueError``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = torch.unique(target[(target < 0) | (target >= num_classes)])[:10].tolist()
        raise ValueError(f"ground-truth labels {bad} are outside [0, {num_classes}) and are not the ignore "
                         f"index {ignore_index}")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted labels outside [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(confmat: torch.Tensor | np.ndarray) -> dict[str, object]:
    """``{"mIoU", "mAcc", "aAcc"}`` (floats) and ``{"IoU", "Acc"}`` (float64 numpy arrays of C, NaN = undefined).

    See the module docstring for the definitions; with no valid pixel at all everything is NaN.
    """
    m = np.asarray(confmat.cpu() if torch.is_tensor(confmat) else confmat, dtype=np.float64)
    tp = np.diag(m)
    gt, pr = m.sum(1), m.sum(0)
    union = gt + pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = m.sum()

    def nanmean(x: np.ndarray) -> float:
        return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan

    return {"mIoU": nanmean(iou), "mAcc": nanmean(acc), "aAcc": float(tp.sum() / total) if total else math.nan,
            "IoU": iou, "Acc": acc}


class SegmentationMetrics(Metric):
    """Whole-dataset confusion matrix -> mIoU, mAcc, aAcc (+ per-class IoU / Acc), exact under DDP.

    ``update(pred, target)``: integer label maps of the same shape (e.g. (B, H, W) or one (H, W) image).
    ``compute()`` returns :func:`metrics_from_confusion` of the matrix summed over all updates and ranks, plus
    ``"confmat"`` (the (C, C) int64 tensor).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.add_state("confmat", default=torch.zeros(self.num_classes, self.num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confmat += confusion_matrix(pred.to(self.confmat.device), target.to(self.confmat.device),
                                         self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, object]:
        return {**metrics_from_confusion(self.confmat), "confmat": self.confmat.clone()}


def write_class_table(path: str | Path, class_names: Sequence[str], result: dict[str, object]) -> Path:
    """Write the per-class table of a :meth:`SegmentationMetrics.compute` result as CSV.

    Columns: ``class_id, name, IoU, Acc, gt_pixels, pred_pixels`` (IoU and Acc in [0, 1] with 6 decimals, empty
    when undefined: the class is excluded from the means), then a row ``mean`` (mIoU, mAcc, all counted pixels)
    and a row ``all`` (aAcc in the IoU column).  The file is replaced atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    confmat = np.asarray(result["confmat"].cpu() if torch.is_tensor(result["confmat"]) else result["confmat"])
    iou, acc = np.asarray(result["IoU"]), np.asarray(result["Acc"])
    if len(class_names) != len(iou):
        raise ValueError(f"{len(class_names)} class names for {len(iou)} classes")

    def fmt(v: float) -> str:
        return "" if not np.isfinite(v) else f"{v:.6f}"

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_id", "name", "IoU", "Acc", "gt_pixels", "pred_pixels"])
        for c, name in enumerate(class_names):
            w.writerow([c, name, fmt(iou[c]), fmt(acc[c]), int(confmat[c].sum()), int(confmat[:, c].sum())])
        w.writerow(["mean", "", fmt(result["mIoU"]), fmt(result["mAcc"]), int(confmat.sum()), ""])
        w.writerow(["all", "aAcc", fmt(result["aAcc"]), "", "", ""])
    tmp.replace(path)
    return path

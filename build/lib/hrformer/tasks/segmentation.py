"""Semantic segmentation: pixel cross-entropy (OHEM option, auxiliary loss), whole-image / sliding-window
inference with optional multi-scale + flip test, confusion-matrix metrics, pictures.

Head outputs are logits at 1/4 of the input resolution, either a tensor (HRNetV2 ``UpsampleConcatHead``) or
``{"out": ..., "aux": ...}`` (``OCRHead``).  As in the official code, logits are upsampled bilinearly
(``align_corners=True``) to the label size for the loss, and to the input size for inference.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..evaluation.segmentation import SegmentationMetrics, write_class_table
from ..visualize import denormalize, fit_to_side, seg_palette, seg_panel

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def main_output(outputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's main logits: the tensor itself, or ``outputs["out"]``."""
    return outputs["out"] if isinstance(outputs, dict) else outputs


def resize_logits(logits: torch.Tensor, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size), bilinear; unchanged when already that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


# ---------------------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------------------


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7, min_kept: int = 100_000,
                       weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Online hard example mining cross-entropy (the official HRNet ``OhemCrossEntropy``).

    logits (B, C, H, W), target (B, H, W).  Over all valid pixels of the batch, the probability of the true
    class p is computed; the threshold is ``max(thresh, p_(k))`` with p_(k) the (k+1)-th smallest p,
    k = ``min(min_kept, n_valid - 1)``; the loss is the mean pixel cross-entropy (class-weighted per pixel with
    ``weight``) over the pixels with ``p < threshold``.  So at least about ``min_kept`` of the hardest pixels are
    kept, and every pixel predicted with less than ``thresh`` confidence.  No valid or no kept pixel: 0.
    """
    pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none").reshape(-1)
    valid = target.reshape(-1) != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    with torch.no_grad():
        prob = F.softmax(logits.float(), dim=1)
        idx = target.clone()
        idx[idx == ignore_index] = 0
        p = prob.gather(1, idx.unsqueeze(1)).reshape(-1)[valid]
        k = min(int(min_kept), p.numel() - 1)
        threshold = max(float(thresh), float(torch.kthvalue(p, k + 1).values))
        keep = p < threshold
    if not keep.any():
        return logits.sum() * 0.0
    return pixel[valid][keep].mean()


class SegmentationLoss(nn.Module):
    """``loss = CE(out) + aux_weight * CE(aux)`` on logits upsampled to the label size.

    Args:
        ignore_index: label ignored by the loss (255).
        class_weights: optional per-class weights (e.g. the official Cityscapes weights of HRNet).
        ohem: online hard example mining on the main output (:func:`ohem_cross_entropy`; the auxiliary output
            uses the plain cross-entropy, as the HRFormer/openseg ``FSAuxOhemCELoss``).
        ohem_thresh, ohem_min_kept: OHEM probability threshold (0.7 HRNet, 0.9 HRFormer) and minimum kept pixels
            per batch (100000 in the official recipes at 512x1024 crops).
        aux_weight: weight of the auxiliary (soft object region) output of the OCR head (0.4).
        align_corners: of the bilinear upsampling.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_weights: Sequence[float] | None = None,
                 ohem: bool = False, ohem_thresh: float = 0.7, ohem_min_kept: int = 100_000,
                 aux_weight: float = 0.4, align_corners: bool = True):
        super().__init__()
        self.ignore_index, self.ohem = ignore_index, bool(ohem)
        self.ohem_thresh, self.ohem_min_kept = float(ohem_thresh), int(ohem_min_kept)
        self.aux_weight, self.align_corners = float(aux_weight), align_corners
        weights = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor, ohem: bool) -> torch.Tensor:
        logits = resize_logits(logits, target.shape[-2:], self.align_corners).float()
        if ohem:
            return ohem_cross_entropy(logits, target, self.ohem_thresh, self.ohem_min_kept, self.class_weights,
                                      self.ignore_index)
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)

    def forward(self, outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """outputs: (B, C, h, w) logits or ``{"out", "aux"}``; target (B, H, W) int64 -> (loss, parts)."""
        parts = {"out": self.cross_entropy(main_output(outputs), target, self.ohem)}
        loss = parts["out"]
        if isinstance(outputs, dict) and "aux" in outputs and self.aux_weight > 0:
            parts["aux"] = self.cross_entropy(outputs["aux"], target, ohem=False)
            loss = loss + self.aux_weight * parts["aux"]
        return loss, parts


# ---------------------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------------------


class WholeInference:
    """The whole image in one forward pass: ``(logits_fn, images (B, 3, H, W)) -> (B, C, H, W)``."""

    def __call__(self, logits_fn: LogitsFn, images: torch.Tensor) -> torch.Tensor:
        return logits_fn(images)


class SlidingWindowInference:
    """Overlapping crops, logits averaged where they overlap (mmseg ``slide_inference``).

    Windows of ``crop_size`` (h, w) start every ``stride`` (h, w) pixels (None: 2/3 of the crop); the last
    row/column is shifted back to end at the image border, so every pixel is covered; an image smaller than the
    crop is one window of its own size.  The windows of all images go through the model ``batch_size`` at a time
    (None: all at once).  ``(logits_fn, images (B, 3, H, W)) -> (B, C, H, W)``.
    """

    def __init__(self, crop_size: Sequence[int], stride: Sequence[int] | None = None, batch_size: int | None = None):
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        if stride is None:
            stride = (max(1, 2 * self.crop_size[0] // 3), max(1, 2 * self.crop_size[1] // 3))
        self.stride = (int(stride[0]), int(stride[1]))
        if min(self.crop_size + self.stride) <= 0:
            raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive")
        self.batch_size = batch_size

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(y1, y2, x1, x2) of every window over an image of that size."""
        ch, cw = min(self.crop_size[0], height), min(self.crop_size[1], width)
        sh, sw = self.stride
        rows = max(height - ch + sh - 1, 0) // sh + 1
        cols = max(width - cw + sw - 1, 0) // sw + 1
        out = []
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
                out.append((y2 - ch, y2, x2 - cw, x2))
        return out

    def __call__(self, logits_fn: LogitsFn, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        wins = self.windows(h, w)
        crops = torch.cat([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in wins])  # (n_win * B, 3, ch, cw)
        step = self.batch_size or crops.shape[0]
        logits = torch.cat([logits_fn(crops[i:i + step]) for i in range(0, crops.shape[0], step)])
        out = logits.new_zeros((b, logits.shape[1], h, w))
        count = logits.new_zeros((1, 1, h, w))
        for i, (y1, y2, x1, x2) in enumerate(wins):
            out[:, :, y1:y2, x1:x2] += logits[i * b:(i + 1) * b]
            count[:, :, y1:y2, x1:x2] += 1
        return out / count


# ---------------------------------------------------------------------------------------------------------
# task
# ---------------------------------------------------------------------------------------------------------


def _is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class SegmentationTask(nn.Module):
    """What the LightningModule delegates to for semantic segmentation.

    Args:
        num_classes: number of train-id classes (labels in ``[0, num_classes)``, 255 ignored).
        class_names: a name per class (per-class table, W&B masks, legends; default ``class_<i>``).
        loss: a :class:`SegmentationLoss` (default: plain cross-entropy, aux weight 0.4).
        inference: :class:`WholeInference` (default) or :class:`SlidingWindowInference`.
        scales: test scales (1.0: as given; e.g. ``[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]`` for multi-scale).
        flip: also predict the horizontally flipped image and average (softmax probabilities are averaged over
            all scales and flips, then the argmax is taken at the label resolution).
        align_corners: bilinear upsampling of logits (True, as the official HRNet and HRFormer code).
        palette: RGB colour per class for pictures (None: generated).
        table_file: where the per-class IoU/Acc table (CSV) is written at each evaluation (None: not written).
        picture_side: pictures are reduced to at most this many pixels on their long side.
    """

    key_metric = "val/mIoU"
    key_metric_mode = "max"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 loss: SegmentationLoss | None = None,
                 inference: WholeInference | SlidingWindowInference | None = None,
                 scales: Sequence[float] = (1.0,), flip: bool = False, align_corners: bool = True,
                 palette: Sequence[Sequence[int]] | None = None, table_file: str | Path | None = None,
                 picture_side: int = 512):
        super().__init__()
        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in class_names] if class_names is not None else [
            f"class_{i}" for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        self.loss = loss or SegmentationLoss()
        self.inference = inference or WholeInference()
        self.scales = [float(s) for s in scales]
        self.flip, self.align_corners = bool(flip), align_corners
        self.palette = seg_palette(self.num_classes, palette)
        self.table_file = table_file
        self.picture_side = int(picture_side)
        self.metric = SegmentationMetrics(self.num_classes, IGNORE_INDEX)

    # ---- training
    def training_loss(self, outputs: torch.Tensor | dict[str, torch.Tensor], batch: dict[str, Any]
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = self.loss(outputs, batch["label"].long())
        logs = {"train/loss": loss.detach()}
        if len(parts) > 1:
            logs.update({f"train/loss_{k}": v.detach() for k, v in parts.items()})
        return loss, logs

    # ---- inference
    def predict(self, model: Callable[[torch.Tensor], Any], images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C, H, W) at the size of ``images`` (B, 3, H, W), averaged over scales and flips."""
        size = images.shape[-2:]

        def logits_fn(x: torch.Tensor) -> torch.Tensor:
            return resize_logits(main_output(model(x)), x.shape[-2:], self.align_corners).float()

        total = None
        for s in self.scales:
            x = images if s == 1.0 else F.interpolate(  # images as cv2.resize does it (half-pixel centres)
                images, size=(max(1, round(size[0] * s)), max(1, round(size[1] * s))), mode="bilinear",
                align_corners=False)
            probs = F.softmax(self.inference(logits_fn, x), dim=1)
            if self.flip:
                probs = probs + F.softmax(self.inference(logits_fn, x.flip(-1)), dim=1).flip(-1)
            probs = resize_logits(probs, size, self.align_corners)
            total = probs if total is None else total + probs
        return total / (len(self.scales) * (2 if self.flip else 1))

    def validation_step(self, model: Callable, batch: dict[str, Any]) -> dict[str, Any]:
        """Predict every image of a (possibly padded) batch, update the confusion matrix.

        Returns ``{"loss": mean NLL of the averaged probabilities over the valid pixels, "pred": [(H_i, W_i)
        uint8 class maps at the label resolution, on the CPU]}``.
        """
        images, labels = batch["image"], batch["label"]
        b = images.shape[0]
        image_hw = batch.get("image_hw", torch.tensor([images.shape[-2:]] * b)).tolist()
        label_hw = batch.get("label_hw", torch.tensor([labels.shape[-2:]] * b)).tolist()
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, hw in enumerate(image_hw):
            groups[tuple(hw)].append(i)
        preds: list[torch.Tensor | None] = [None] * b
        nll, n_valid = images.new_zeros(()), 0
        for (h, w), idx in groups.items():
            probs = self.predict(model, images[idx, :, :h, :w])
            for j, i in enumerate(idx):
                lh, lw = label_hw[i]
                p = resize_logits(probs[j:j + 1], (lh, lw), self.align_corners)[0]  # (C, lh, lw)
                target = labels[i, :lh, :lw].long()
                valid = target != IGNORE_INDEX
                if valid.any():
                    logp = torch.log(p.clamp_min(1e-12))
                    nll = nll + F.nll_loss(logp[None], target[None], ignore_index=IGNORE_INDEX, reduction="sum")
                    n_valid += int(valid.sum())
                pred = p.argmax(0)
                self.metric.update(pred, target)
                preds[i] = pred.to(torch.uint8).cpu()
        return {"loss": nll / max(n_valid, 1), "pred": preds}

    def compute_metrics(self) -> dict[str, float]:
        result = self.metric.compute()
        self.metric.reset()
        if self.table_file and _is_rank_zero():
            write_class_table(self.table_file, self.class_names, result)
        return {"val/mIoU": result["mIoU"], "val/mAcc": result["mAcc"], "val/aAcc": result["aAcc"]}

    # ---- pictures
    def _picture_items(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int):
        images, labels = batch["image"], batch["label"]
        b = images.shape[0]
        image_hw = batch.get("image_hw", torch.tensor([images.shape[-2:]] * b)).tolist()
        label_hw = batch.get("label_hw", torch.tensor([labels.shape[-2:]] * b)).tolist()
        names = batch.get("name", [f"img{i}" for i in range(b)])
        for i in range(min(int(max_images), b)):
            (h, w), (lh, lw) = image_hw[i], label_hw[i]
            image = denormalize(images[i, :, :h, :w])
            if (h, w) != (lh, lw):
                image = cv2.resize(image, (lw, lh), interpolation=cv2.INTER_LINEAR)
            gt = labels[i, :lh, :lw].cpu().numpy().astype(np.uint8)
            pred = np.asarray(outputs["pred"][i], dtype=np.uint8)
            yield i, str(names[i]), image, pred, gt

    def pictures(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int = 8
                 ) -> list[tuple[str, np.ndarray]]:
        """(name, RGB uint8) per image of a validation batch: image | predicted colours | ground-truth colours,
        with a legend of the classes present (see :func:`hrformer.visualize.seg_panel`)."""
        return [(f"{i:02d}_{name}", seg_panel(image, pred, gt, self.palette, self.class_names,
                                              max_side=self.picture_side))
                for i, name, image, pred, gt in self._picture_items(batch, outputs, max_images)]

    def wandb_images(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int = 8
                     ) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
        """(caption, RGB image, ``wandb.Image`` keyword arguments) with the prediction and the ground truth as
        interactive masks (``masks={"predictions": ..., "ground_truth": ...}``, class names, 255 "ignore")."""
        labels = {i: n for i, n in enumerate(self.class_names)} | {IGNORE_INDEX: "ignore"}
        items = []
        for i, name, image, pred, gt in self._picture_items(batch, outputs, max_images):
            image, (pred, gt) = fit_to_side(image, [pred, gt], self.picture_side)
            masks = {"predictions": {"mask_data": pred, "class_labels": labels},
                     "ground_truth": {"mask_data": gt, "class_labels": labels}}
            items.append((f"{i:02d}_{name}", image, {"masks": masks}))
        return items

"""Top-down heatmap pose: loss, flip-test inference, decoding to image coordinates, COCO AP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..codecs.heatmap import COCO_FLIP_PAIRS, HeatmapCodec, flip_back
from ..data.geometry import affine_points, get_affine_transform
from ..evaluation.coco import COCOKeypointAP
from ..visualize import denormalize, pose_panel


class JointsMSELoss(nn.Module):
    """The official loss: mean over joints of 0.5 * MSE between target-weighted heatmaps.

    outputs, targets (B, K, h, w); weights (B, K).
    """

    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        pred, gt = outputs.float().flatten(2), targets.float().flatten(2)
        if self.use_target_weight:
            w = weights.float()[..., None]
            pred, gt = pred * w, gt * w
        return 0.5 * (pred - gt).square().mean()


class PoseTask(nn.Module):
    """What the LightningModule delegates to for pose.

    Args:
        codec: heatmap codec (targets are encoded by the datamodule with the same settings).
        ann_file: ground-truth json of the validation split (COCOeval).
        flip_test: average with the heatmaps of the flipped image (``shift_heatmap``: the 1-px shift).
        rescore, vis_thr, oks_nms_thr: COCO post-processing before COCOeval.
        results_file: where to write the COCO results json at each evaluation (None: not written).
    """

    key_metric = "val/AP"
    key_metric_mode = "max"

    def __init__(self, codec: HeatmapCodec, ann_file: str | Path | None = None, flip_test: bool = True,
                 shift_heatmap: bool = True, flip_pairs: Sequence[Sequence[int]] = COCO_FLIP_PAIRS,
                 rescore: bool = True, vis_thr: float = 0.2, oks_nms_thr: float = 0.9,
                 results_file: str | None = None, loss: nn.Module | None = None):
        super().__init__()
        self.codec = codec
        self.loss = loss or JointsMSELoss()
        self.flip_test, self.shift_heatmap, self.flip_pairs = flip_test, shift_heatmap, [tuple(p) for p in flip_pairs]
        self.metric_kwargs = dict(rescore=rescore, vis_thr=vis_thr, oks_nms_thr=oks_nms_thr, results_file=results_file)
        self.metric: COCOKeypointAP | None = None
        if ann_file is not None:
            self.set_annotation_file(ann_file)

    def set_annotation_file(self, ann_file: str | Path) -> None:
        self.metric = COCOKeypointAP(str(ann_file), **self.metric_kwargs)

    # ---- training
    def training_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        loss = self.loss(outputs, batch["target"], batch["target_weight"])
        return loss, {"train/loss": loss.detach()}

    # ---- inference
    def predict_heatmaps(self, model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        heatmaps = model(images)
        if self.flip_test:
            flipped = model(images.flip(-1))
            heatmaps = 0.5 * (heatmaps + flip_back(flipped, self.flip_pairs, shift=self.shift_heatmap))
        return heatmaps

    def decode(self, heatmaps: torch.Tensor, batch: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps (B, K, h, w) -> keypoints (B, K, 2) in image px and scores (B, K)."""
        coords, scores = self.codec.decode(heatmaps.detach().float().cpu().numpy())
        keypoints = self.codec.heatmap_to_image(coords, batch["center"].cpu().numpy(), batch["size"].cpu().numpy())
        return keypoints, scores

    def validation_step(self, model: Callable, batch: dict[str, Any]) -> dict[str, Any]:
        heatmaps = self.predict_heatmaps(model, batch["image"])
        loss = self.loss(heatmaps, batch["target"], batch["target_weight"])
        keypoints, scores = self.decode(heatmaps, batch)
        if self.metric is not None:
            self.metric.update(torch.as_tensor(batch["image_id"]), torch.from_numpy(keypoints).float(),
                               torch.from_numpy(scores).float(), torch.as_tensor(batch["box_score"]).float(),
                               torch.as_tensor(batch["area"]).float())
        return {"loss": loss.detach(), "keypoints": keypoints, "scores": scores}

    def compute_metrics(self) -> dict[str, float]:
        if self.metric is None:
            return {}
        stats = self.metric.compute()
        self.metric.reset()
        return {f"val/{k}": float(v) for k, v in stats.items()}

    # ---- pictures
    def pictures(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int = 8,
                 thr: float = 0.3, min_height: int = 256) -> list[tuple[str, np.ndarray]]:
        """(name, RGB uint8 image) for the first ``max_images`` people of a validation batch.

        Each image is the input crop (``batch["image"]`` denormalised) with the predicted skeleton
        (``outputs["keypoints"]``, image px, mapped into the crop with the forward crop transform) beside the
        same crop with the ground-truth skeleton (``batch["keypoints"]``); detected boxes (no ground truth):
        the prediction alone.  See :func:`hrformer.visualize.pose_panel` (``thr``, ``min_height``).
        """
        def as_np(x: Any) -> np.ndarray:
            return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)

        images = batch["image"]
        centers, sizes = as_np(batch["center"]), as_np(batch["size"])
        gts = as_np(batch["keypoints"]).astype(np.float64) if "keypoints" in batch else None
        pred_kpts, pred_scores = as_np(outputs["keypoints"]), as_np(outputs["scores"])
        image_ids = as_np(batch["image_id"]).reshape(-1)
        ann_ids = as_np(batch["ann_id"]).reshape(-1) if "ann_id" in batch else np.full(len(images), -1)
        pictures = []
        for i in range(min(int(max_images), images.shape[0])):
            matrix = get_affine_transform(centers[i], sizes[i], 0.0, self.codec.input_size)
            pred = affine_points(pred_kpts[i][:, :2], matrix)
            gt = None
            if gts is not None and (gts[i][:, 2] > 0).any():
                gt = np.concatenate([affine_points(gts[i][:, :2], matrix), gts[i][:, 2:3]], axis=1)
            who = f"ann{int(ann_ids[i])}" if int(ann_ids[i]) >= 0 else f"det{i}"
            panel = pose_panel(denormalize(images[i]), pred, pred_scores[i], gt, thr=thr, min_height=min_height)
            pictures.append((f"{i:02d}_img{int(image_ids[i])}_{who}", panel))
        return pictures

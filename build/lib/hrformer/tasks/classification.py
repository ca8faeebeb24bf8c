"""Image classification: label-smoothed / Mixup-CutMix soft-target loss, top-k accuracy, labelled pictures.

The task interface (as :class:`~hrformer.tasks.pose.PoseTask`), used by :class:`~hrformer.module.HRLitModule`:
``training_batch`` (Mixup/CutMix on the device), ``training_loss``, ``validation_step``, ``compute_metrics``,
``key_metric``, ``connect_datamodule`` (class names), ``checkpoint_state`` / ``load_checkpoint_state`` (the class
names travel in checkpoints), ``pictures`` and ``prediction_table`` (run-directory PNGs and the W&B table).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..visualize import denormalize
from .mixup import MixupCutmix, smooth_one_hot

log = logging.getLogger(__name__)

CORRECT_COLOR = (40, 170, 40)  # RGB
WRONG_COLOR = (210, 40, 40)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c targets[b, c] log_softmax(logits)[b, c]``; logits, targets (B, C)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def top_predictions(logits: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, C) -> the top-``k`` (at most C) softmax probabilities (B, k) and class indices (B, k), best first."""
    probs = logits.float().softmax(-1)
    return probs.topk(min(k, probs.shape[-1]), dim=-1)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "x"


class ClassificationTask(nn.Module):
    """What the LightningModule delegates to for classification.

    Args:
        num_classes: classes of the head.
        label_smoothing: smoothing of the training targets (0.1 in the DeiT/Swin recipe).
        mixup: a :class:`~hrformer.tasks.mixup.MixupCutmix` applied to training batches (None: off).
        top_k: accuracies to report, logged as ``val/top{k}``; ``k`` above ``num_classes`` is computed with
            ``k = num_classes`` (then 1.0) so that ``val/top5`` exists for any dataset.
        class_names: names in index order (normally set from the datamodule or a checkpoint).

    Accuracies are micro averages (correct predictions / images, as papers report), not torchmetrics' default
    macro average over classes, and are gathered over all ranks by torchmetrics.
    """

    key_metric = "val/top1"
    key_metric_mode = "max"

    def __init__(self, num_classes: int, label_smoothing: float = 0.1, mixup: MixupCutmix | None = None,
                 top_k: Sequence[int] = (1, 5), class_names: Sequence[str] | None = None):
        super().__init__()
        self.num_classes, self.label_smoothing, self.mixup = int(num_classes), float(label_smoothing), mixup
        self.top_k = tuple(int(k) for k in top_k)
        self.metrics = nn.ModuleDict({f"top{k}": MulticlassAccuracy(self.num_classes, top_k=min(k, self.num_classes),
                                                                    average="micro") for k in self.top_k})
        self.class_names: list[str] | None = None
        if class_names is not None:
            self.set_class_names(class_names)

    # ---- class names
    def set_class_names(self, names: Sequence[str]) -> None:
        names = [str(n) for n in names]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for a {self.num_classes}-class model: {names[:10]}")
        self.class_names = names

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else f"class {index}"

    def connect_datamodule(self, datamodule: Any) -> None:
        """Take the class names of the data (``datamodule.class_names``, set in its ``setup``)."""
        names = getattr(datamodule, "class_names", None)
        if names is None:
            return
        if self.class_names is not None and list(names) != self.class_names:
            log.warning("the data's class names differ from the model's (checkpoint): %s vs %s; using the data's",
                        list(names)[:5], self.class_names[:5])
        self.set_class_names(names)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"class_names": self.class_names}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if state.get("class_names") is not None:
            self.set_class_names(state["class_names"])

    # ---- training
    def training_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Mixup/CutMix: replaces ``image`` and adds ``soft_target`` (B, C); unchanged without mixing."""
        if self.mixup is None or not self.mixup.enabled:
            return batch
        images, targets, _ = self.mixup(batch["image"], batch["label"], self.num_classes, self.label_smoothing)
        return {**batch, "image": images, "soft_target": targets}

    def training_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        """Soft-target cross-entropy (Mixup/CutMix), or cross-entropy with label smoothing."""
        if "soft_target" in batch:
            loss = soft_target_cross_entropy(outputs, batch["soft_target"])
        else:
            loss = F.cross_entropy(outputs.float(), batch["label"].long(), label_smoothing=self.label_smoothing)
        return loss, {"train/loss": loss.detach()}

    # ---- inference
    @torch.no_grad()
    def predict(self, model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, k: int = 5
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` (probabilities (B, k), class indices (B, k)), best first."""
        return top_predictions(model(images), k)

    def validation_step(self, model: Callable, batch: dict[str, Any]) -> dict[str, Any]:
        logits = model(batch["image"]).float()
        labels = batch["label"].long()
        loss = F.cross_entropy(logits, labels)
        for metric in self.metrics.values():
            metric.update(logits, labels)
        probs, indices = top_predictions(logits, 5)
        return {"loss": loss.detach(), "topk_probs": probs.detach(), "topk_indices": indices.detach()}

    def compute_metrics(self) -> dict[str, float]:
        out = {f"val/{name}": float(metric.compute()) for name, metric in self.metrics.items()}
        for metric in self.metrics.values():
            metric.reset()
        return out

    # ---- pictures
    def _entries(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int):
        images, labels = batch["image"], batch["label"].detach().cpu().tolist()
        probs, indices = outputs["topk_probs"].detach().cpu(), outputs["topk_indices"].detach().cpu()
        paths = batch.get("path") or [""] * len(labels)
        count = min(int(max_images), len(labels))
        # spread over the batch: validation batches come sorted by class
        for i in np.unique(np.linspace(0, len(labels) - 1, count).round().astype(int)) if count > 0 else []:
            i = int(i)
            pred = int(indices[i, 0])
            yield i, denormalize(images[i]), labels[i], pred, float(probs[i, 0]), paths[i]

    def pictures(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int = 8,
                 min_height: int = 128) -> list[tuple[str, np.ndarray]]:
        """(name, RGB uint8 image) for ``max_images`` validation images spread evenly over the batch.

        Each picture is the input crop (denormalised, enlarged by an integer factor to at least ``min_height``)
        above a caption band with the true and the predicted class and its probability, green when they agree
        and red otherwise.  The name says ``ok``/``wrong``, the true and the predicted class.
        """
        pictures = []
        for i, image, label, pred, prob, _ in self._entries(batch, outputs, max_images):
            true_name, pred_name = self.class_name(label), self.class_name(pred)
            panel = label_panel(image, f"true: {true_name}", f"pred: {pred_name} {prob:.2f}", pred == label,
                                min_height)
            name = f"{i:02d}_{'ok' if pred == label else 'wrong'}_true-{_safe(true_name)}_pred-{_safe(pred_name)}"
            pictures.append((name, panel))
        return pictures

    def prediction_table(self, batch: dict[str, Any], outputs: dict[str, Any], max_images: int = 8
                         ) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows of the W&B table: image (RGB uint8), true, predicted, probability, correct, file."""
        rows = [[image, self.class_name(label), self.class_name(pred), round(prob, 4), pred == label, path]
                for _, image, label, pred, prob, path in self._entries(batch, outputs, max_images)]
        return ["image", "true", "predicted", "probability", "correct", "file"], rows


def label_panel(image: np.ndarray, line1: str, line2: str, correct: bool, min_height: int = 128) -> np.ndarray:
    """``image`` (H, W, 3) RGB uint8 above a white band with two lines of text in green (correct) or red."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    f = max(1, -(-min_height // h))
    if f > 1:
        image = cv2.resize(image, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    width = image.shape[1]
    scale = max(0.35, min(0.6, width / 320))
    line_h = int(round(22 * scale / 0.5))
    band = np.full((2 * line_h + 6, width, 3), 255, np.uint8)
    color = CORRECT_COLOR if correct else WRONG_COLOR
    for k, text in enumerate((line1, line2)):
        cv2.putText(band, text, (3, (k + 1) * line_h), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


__all__ = ["ClassificationTask", "MixupCutmix", "label_panel", "smooth_one_hot", "soft_target_cross_entropy"]

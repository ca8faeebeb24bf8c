"""Mixup / CutMix on a batch, with the soft targets they imply (timm's ``Mixup``, ``mode="batch"``).

Applied by the classification task to the training batch after it reaches the device, so the datamodule
stays a plain image/label loader.  Every image is mixed with the image at the mirrored batch position
(``x.flip(0)``), with one ``lam`` per batch:

- with probability ``prob`` the batch is mixed, otherwise left alone (``lam = 1``);
- when both are enabled, CutMix is chosen with probability ``switch_prob``, Mixup otherwise;
- Mixup: ``x = lam x + (1 - lam) x.flip(0)``, ``lam ~ Beta(mixup_alpha, mixup_alpha)``;
- CutMix: a box of area fraction ``1 - lam`` (``lam ~ Beta(cutmix_alpha, cutmix_alpha)``), centred uniformly,
  clipped to the image, is pasted from ``x.flip(0)``; with ``correct_lam`` ``lam`` becomes the kept area fraction;
- targets: ``lam * onehot_s(y) + (1 - lam) * onehot_s(y.flip(0))`` with label smoothing ``s``
  (``onehot_s`` = ``1 - s + s / C`` on the class, ``s / C`` elsewhere).
"""

from __future__ import annotations

import math

import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) int labels -> (B, C) targets: ``1 - smoothing + smoothing / C`` on the label, ``smoothing / C`` off."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """timm's ``rand_bbox``: a box (y0, y1, x0, x1) of side ``sqrt(1 - lam)`` of the image, centre uniform, clipped."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


class MixupCutmix:
    """Batch-level Mixup/CutMix switching (see the module docstring).

    Args:
        mixup_alpha, cutmix_alpha: Beta parameters (0 disables that kind).
        prob: probability of mixing a batch at all.
        switch_prob: probability of CutMix when both are enabled.
        correct_lam: recompute ``lam`` from the clipped CutMix box.
    """

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, correct_lam: bool = True):
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob, self.correct_lam = float(prob), float(switch_prob), bool(correct_lam)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def sample(self) -> tuple[float, bool]:
        """(lam, use_cutmix) for one batch from torch's global generator; lam = 1 means no mixing."""
        if not self.enabled or float(torch.rand(())) >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = float(torch.rand(())) < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = torch.tensor(self.cutmix_alpha if use_cutmix else self.mixup_alpha, dtype=torch.float64)
        return float(torch.distributions.Beta(alpha, alpha).sample()), use_cutmix

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, smoothing: float = 0.0,
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """images (B, C, H, W), labels (B,) -> (mixed images, soft targets (B, num_classes), lam).

        The input tensor is not modified (it is returned as it is when the batch is not mixed).
        """
        lam, use_cutmix = self.sample()
        if lam < 1.0:
            if use_cutmix:
                h, w = images.shape[-2:]
                y0, y1, x0, x1 = cutmix_box(h, w, lam)
                images = images.clone()
                images[..., y0:y1, x0:x1] = images[..., y0:y1, x0:x1].flip(0)
                if self.correct_lam:
                    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
            else:
                images = lam * images + (1.0 - lam) * images.flip(0)
        onehot = smooth_one_hot(labels, num_classes, smoothing)
        targets = lam * onehot + (1.0 - lam) * onehot.flip(0)
        return images, targets, lam

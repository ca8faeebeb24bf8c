"""Training on with unreadable images (``data.on_bad_image=skip``): each one is left out of its batch, named in a
warning, and counted per epoch (``train/skipped_images``, summed over ranks).

:class:`~hrformer.data.sampling.SeededSamples` returns a :class:`BadSample` for an image that raised ``OSError``
(missing, undecodable, truncated); :class:`SkippingCollate` collates the other samples and lists the bad ones under
``batch["skipped_images"]``; :class:`SkippedImagesLog` (attached by ``hrformer.train``) takes that key out of the
batch before the model sees it.  Every rank still trains the same number of steps (a batch only gets smaller), so
DDP never waits on a rank that skipped; a batch with no readable image at all raises an error naming its files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import default_collate

log = logging.getLogger(__name__)

SKIPPED_KEY = "skipped_images"


@dataclass
class BadSample:
    """A training sample whose image could not be read: its index and the error."""

    index: int
    error: str


class SkippingCollate:
    """``collate`` (default: torch's) over the readable samples; the errors of the others under ``SKIPPED_KEY``."""

    def __init__(self, collate: Callable[[list], Any] | None = None):
        self.collate = collate or default_collate

    def __call__(self, samples: list) -> Any:
        bad = [s.error for s in samples if isinstance(s, BadSample)]
        if not bad:
            return self.collate(samples)
        good = [s for s in samples if not isinstance(s, BadSample)]
        if not good:
            raise OSError(f"no readable image in a training batch of {len(samples)}: {'; '.join(bad)}")
        batch = self.collate(good)
        batch[SKIPPED_KEY] = bad
        return batch


class SkippedImagesLog(L.Callback):
    """Names every skipped image in a warning and logs ``train/skipped_images`` (all ranks) at each epoch end."""

    def __init__(self):
        self.count = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.count = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        skipped = batch.pop(SKIPPED_KEY, None) if isinstance(batch, dict) else None
        for error in skipped or ():
            log.warning("skipped a training image (step %d): %s", trainer.global_step, error)
        self.count += len(skipped or ())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        count = torch.tensor(float(self.count), device=pl_module.device)
        total = int(trainer.strategy.reduce(count, reduce_op="sum").item())
        if total:
            log.warning("epoch %d: %d unreadable training images skipped", trainer.current_epoch, total)
        pl_module.log("train/skipped_images", float(total), on_step=False, on_epoch=True)

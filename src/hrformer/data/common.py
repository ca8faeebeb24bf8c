"""What the datamodules share: reading an image, the network-input normalisation, and train / val / test
dataloaders over a training and a validation set."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset

from ..utils.rng import all_rng_states, set_rng_state
from .integrity import TruncatedImageError, image_problem
from .sampling import ResumePosition, training_loader, training_position

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def read_rgb(path: str | Path, ignore_orientation: bool = False) -> np.ndarray:
    """An image file as (H, W, 3) RGB uint8 (grayscale, palette, alpha, 16-bit and CMYK files converted).

    ``ignore_orientation``: the stored pixel order, as PIL (and so ImageNet loaders) reads it; otherwise OpenCV's
    default, the EXIF orientation applied.  A missing or undecodable file raises ``OSError`` naming it, a truncated
    JPEG or PNG (which OpenCV decodes with grey rows and a warning) ``TruncatedImageError`` (an ``OSError``).
    """
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)
    image = cv2.imread(str(path), flags)
    problem = image_problem(path) if Path(path).is_file() else None
    if problem is not None:
        raise TruncatedImageError(f"cannot read image {path}: {problem}")
    if image is None:
        raise OSError(f"cannot read image {path}: missing, unreadable or not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_normalized_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) RGB uint8 -> (3, H, W) float32, ImageNet-normalised: the input of every task's network."""
    arr = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class TrainValDataModule(L.LightningDataModule):
    """A datamodule with ``train_set`` and ``val_set`` (built in ``setup``); testing uses the validation set.

    Subclasses set ``batch_size``, ``val_batch_size``, ``num_workers``, ``pin_memory`` and ``on_bad_image``
    (``"raise"``: an unreadable training image stops training with an error naming it; ``"skip"``: it is left out
    and counted, see :mod:`~hrformer.data.bad_images`), may set ``collate_fn`` (training batches) and may override
    :meth:`_loader` (validation and test loaders, e.g. for a sampler or a collate function).

    The training loader is :func:`~hrformer.data.sampling.training_loader`: its order and augmentation are functions
    of (seed, epoch, sample).  The checkpoint state (:meth:`state_dict`) holds where in which epoch training stood
    and the global random states of every rank, so that a run resumed from any checkpoint, mid-epoch ones included,
    trains on exactly what the uninterrupted run would have.
    """

    on_bad_image: str = "raise"
    collate_fn: Callable[[list], Any] | None = None
    _resume_position: ResumePosition | None = None

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        """Training (``shuffle``): shuffled, the last partial batch dropped; else in order, every sample."""
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, drop_last=shuffle, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        position, self._resume_position = self._resume_position, None
        return training_loader(self.train_set, self.batch_size, self.num_workers, self.pin_memory, self.trainer,
                               position, self.collate_fn, self.on_bad_image)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return {}
        return {"position": asdict(training_position(self.trainer)), "rng": all_rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "position" in state:
            self._resume_position = ResumePosition(**state["position"])
        states = state.get("rng") or []
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        if len(states) == world:
            set_rng_state(states[rank])
        elif states:
            log.warning("the checkpoint holds the random states of %d ranks, this run has %d: not restored (the "
                        "resumed run is not bitwise that of an uninterrupted one)", len(states), world)

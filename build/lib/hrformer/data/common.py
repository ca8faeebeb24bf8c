"""What the datamodules share: reading an image, the network-input normalisation, and train / val / test
dataloaders over a training and a validation set."""

from __future__ import annotations

from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def read_rgb(path: str | Path, ignore_orientation: bool = False) -> np.ndarray:
    """An image file as (H, W, 3) RGB uint8 (grayscale, palette, alpha, 16-bit and CMYK files converted).

    ``ignore_orientation``: the stored pixel order, as PIL (and so ImageNet loaders) reads it; otherwise OpenCV's
    default, the EXIF orientation applied.  A missing or undecodable file raises ``OSError`` naming it.
    """
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)
    image = cv2.imread(str(path), flags)
    if image is None:
        raise OSError(f"cannot read image {path}: missing, unreadable or not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_normalized_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) RGB uint8 -> (3, H, W) float32, ImageNet-normalised: the input of every task's network."""
    arr = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class TrainValDataModule(L.LightningDataModule):
    """A datamodule with ``train_set`` and ``val_set`` (built in ``setup``); testing uses the validation set.

    Subclasses set ``batch_size``, ``val_batch_size``, ``num_workers`` and ``pin_memory``, and may override
    :meth:`_loader` (e.g. for a sampler or a collate function).
    """

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        """Training (``shuffle``): shuffled, the last partial batch dropped; else in order, every sample."""
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, drop_last=shuffle, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

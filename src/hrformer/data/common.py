"""What the datamodules share: train / val / test dataloaders over a training and a validation set."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset


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

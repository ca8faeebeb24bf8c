"""The training loader, made resumable: its order and every sample's randomness are functions of (seed, epoch,
sample), not of what ran before, so that a run resumed from a mid-epoch checkpoint sees the same batches with the
same augmentation as a run that was never stopped.

- :class:`ResumableSampler`: the permutation of ``seed + epoch`` (``DistributedSampler``'s, shard of this rank; one
  process takes it whole), from which an epoch can start after the batches already trained;
- :class:`SeededSamples`: draws sample ``i`` of epoch ``e`` with torch's RNG seeded by :func:`sample_seeds` (the
  datasets derive every random choice, albumentations' included, from one ``torch.randint``), in a forked RNG state
  so that loading with ``num_workers=0`` leaves the model's RNG (dropout, drop path) alone; and applies
  ``on_bad_image`` (``raise``, or ``skip``: see :mod:`hrformer.data.bad_images`);
- :func:`training_position` / :class:`ResumePosition`: where in which epoch a checkpoint was written (kept in the
  datamodule's checkpoint state by :class:`hrformer.data.common.TrainValDataModule`).

The seed is Lightning's global seed (``PL_GLOBAL_SEED``, set by ``seed_everything``), as for the sampler Lightning
itself inserts under DDP.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .bad_images import BadSample, SkippingCollate

ON_BAD_IMAGE = ("raise", "skip")


def global_seed() -> int:
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def sample_seeds(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """(num_samples,) int64: the RNG seed of every sample of one epoch (a function of seed, epoch and index)."""
    return np.random.default_rng([seed, epoch]).integers(0, 2**63 - 1, size=num_samples, dtype=np.int64)


@dataclass
class ResumePosition:
    """Where training resumes: the epoch and the batches of it already trained (0: its start)."""

    epoch: int = 0
    batches: int = 0


def training_position(trainer: L.Trainer) -> ResumePosition:
    """The position after what ``trainer`` has trained so far (when a checkpoint is written now)."""
    epoch = trainer.current_epoch
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if done and done >= trainer.num_training_batches:   # the epoch is complete: the next one starts afresh
        return ResumePosition(epoch + 1, 0)
    return ResumePosition(epoch, int(done))


class ResumableSampler(DistributedSampler):
    """Yields ``(index, sample seed)`` keys for :class:`SeededSamples`, in the order of ``DistributedSampler``
    (shuffled by ``seed + epoch``, padded to a multiple of ``num_replicas``, rank ``rank``'s share).

    :meth:`start_at` sets the epoch and the samples to leave out at the start of the next iteration (the batches
    a resumed run already trained); Lightning's ``set_epoch`` calls keep the epoch current afterwards.  Being a
    ``DistributedSampler``, Lightning keeps it under DDP instead of inserting its own.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self._skip = 0

    def start_at(self, epoch: int, samples: int) -> None:
        self.set_epoch(epoch)
        self._skip = int(samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        seeds = sample_seeds(self.seed, self.epoch, len(self.dataset))
        skip, self._skip = self._skip, 0
        return iter([(i, int(seeds[i])) for i in indices[skip:]])


class SeededSamples(Dataset):
    """``dataset`` read by ``(index, seed)`` keys: the sample drawn with torch's RNG seeded by ``seed`` (in a forked
    RNG state), an unreadable image (``OSError``) raised or, with ``on_bad_image="skip"``, returned as a
    :class:`~hrformer.data.bad_images.BadSample` that the collate function leaves out."""

    def __init__(self, dataset: Dataset, on_bad_image: str = "raise"):
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
        self.dataset, self.on_bad_image = dataset, on_bad_image

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            except OSError as err:
                if self.on_bad_image == "raise":
                    raise
                return BadSample(index, str(err))


def training_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool,
                    trainer: L.Trainer | None, position: ResumePosition | None = None,
                    collate_fn: Callable | None = None, on_bad_image: str = "raise") -> DataLoader:
    """The shuffled training loader (last partial batch dropped) of rank ``trainer.global_rank``, starting at
    ``position`` (None: where ``trainer`` stands, the start of its current epoch)."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, seed=global_seed())
    if position is None:
        position = ResumePosition(trainer.current_epoch if trainer is not None else 0, 0)
    sampler.start_at(position.epoch, position.batches * batch_size)
    # a generator of its own: creating the loader's iterators draws no number from torch's global RNG
    generator = torch.Generator().manual_seed(global_seed())
    return DataLoader(SeededSamples(dataset, on_bad_image), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, pin_memory=pin_memory, drop_last=True, generator=generator,
                      collate_fn=SkippingCollate(collate_fn), persistent_workers=num_workers > 0)

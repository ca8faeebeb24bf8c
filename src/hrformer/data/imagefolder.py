"""Image classification from the ImageNet / ImageFolder layout.

Layout (ImageNet-1k as usually extracted, and the synthetic set the project generates)::

    root/train/<class>/**/*.JPEG
    root/val/<class>/**/*.JPEG

Classes are the sub-folders of the training split, indexed in sorted order (as torchvision's ``ImageFolder``);
the validation split uses the same mapping.  Files are found recursively; extensions are matched
case-insensitively (:data:`IMG_EXTENSIONS`).

Bad input is never silent:

- files without an image extension (``.txt``, ``.DS_Store``, ...) are skipped with a logged count per folder;
- a class folder without images keeps its index (the mapping stays that of the folder names) and is logged as
  empty; a split without any image, or validation classes the training split does not have, raise an error;
- grayscale, palette, RGBA, 16-bit and CMYK images are converted to 8-bit RGB by the decoder (OpenCV
  ``IMREAD_COLOR``, EXIF orientation ignored as PIL's ``convert("RGB")`` does);
- a file that cannot be decoded raises an error naming the file and its class when it is loaded, or, with
  ``check_images=True``, every file is decoded once at setup and the unreadable ones are skipped with a logged
  count and their names.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .cls_transforms import build_train_transform, build_val_transform, random_erasing
from .common import TrainValDataModule, read_rgb, to_normalized_tensor

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(directory: str | Path) -> list[str]:
    """Sorted names of the class sub-folders of ``directory`` (hidden folders ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder not found: {directory}")
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no class folders in {directory} (expected {directory}/<class>/<image files>)")
    return classes


def _readable(path: Path) -> bool:
    try:
        read_rgb(path, ignore_orientation=True)
    except OSError:
        return False
    return True


@dataclass
class ScanReport:
    """What :func:`scan_split` found besides the samples."""

    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict = field(default_factory=dict)  # reason -> a few paths
    empty_classes: list = field(default_factory=list)

    def add(self, reason: str, path: Path) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(str(path))


def scan_split(directory: str | Path, class_to_idx: dict[str, int], check_images: bool = False,
               ) -> tuple[list[tuple[str, int]], ScanReport]:
    """``[(path, class index)]`` of one split (sorted by class, then path) and a :class:`ScanReport`.

    Raises ``ValueError`` for a class folder that is not in ``class_to_idx`` and when no image is found.
    """
    directory = Path(directory)
    present = find_classes(directory)
    unknown = [c for c in present if c not in class_to_idx]
    if unknown:
        raise ValueError(f"{directory} has class folders the training split does not have: {unknown[:10]}")
    samples: list[tuple[str, int]] = []
    report = ScanReport()
    for name in present:
        found = 0
        for dirpath, dirnames, filenames in os.walk(directory / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                if not fname.lower().endswith(IMG_EXTENSIONS):
                    report.add("not an image file (extension)", path)
                    continue
                if check_images and not _readable(path):
                    report.add("unreadable image", path)
                    continue
                samples.append((str(path), class_to_idx[name]))
                found += 1
        if not found:
            report.empty_classes.append(name)
    if report.empty_classes:
        log.warning("%s: %d class folder(s) without images: %s", directory, len(report.empty_classes),
                    report.empty_classes[:10])
    if report.skipped:
        log.warning("%s: %d images, skipped %s (e.g. %s)", directory, len(samples), dict(report.skipped),
                    report.examples)
    if not samples:
        raise ValueError(f"no images found in {directory} (extensions {', '.join(IMG_EXTENSIONS)})")
    return samples, report


class ImageFolderDataset(Dataset):
    """Samples of one split: ``{"image": (3, S, S) float32 normalised, "label": int, "path": str}``.

    Args:
        root: the split folder (``root/<class>/...``).
        classes: class names in index order (default: the sorted sub-folders of ``root``).
        transform: albumentations pipeline on the uint8 RGB image (training or validation, see
            :mod:`hrformer.data.cls_transforms`).
        random_erasing: probability of timm's pixel-mode random erasing on the normalised tensor (training).
        check_images: decode every file once now and skip unreadable ones (logged) instead of failing later.

    Randomness comes from torch's generator (one draw per sample), so ``seed_everything(seed, workers=True)``
    makes the augmentation reproducible, and workers do not repeat each other.
    """

    def __init__(self, root: str | Path, classes: Sequence[str] | None = None,
                 transform: Callable[..., dict] | None = None, random_erasing: float = 0.0,
                 check_images: bool = False, train: bool = False):
        self.root = Path(root)
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples, self.report = scan_split(self.root, self.class_to_idx, check_images)
        self.transform, self.random_erasing, self.train = transform, float(random_erasing), train

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        path, label = self.samples[index]
        try:
            return read_rgb(path, ignore_orientation=True)  # the stored pixel order, as PIL-based ImageNet loaders
        except OSError as err:
            raise OSError(f"{err} (class {self.classes[label]!r}); delete it or set data.check_images=true to skip "
                          "unreadable files") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.load(index)
        rng = None
        if self.train:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            rng = np.random.default_rng(seed)
            if self.transform is not None:
                self.transform.set_random_seed(seed)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = to_normalized_tensor(image)
        if rng is not None and self.random_erasing > 0:
            tensor = random_erasing(tensor, rng, prob=self.random_erasing)
        path, label = self.samples[index]
        return {"image": tensor, "label": label, "path": os.path.relpath(path, self.root)}


class ImageFolderDataModule(TrainValDataModule):
    """Train/val loaders for ``root/{train_dir,val_dir}/<class>/*``.

    Args:
        root: dataset root.
        num_classes: classes the model predicts; the training split must have exactly this many class folders.
        train_dir, val_dir: split folders relative to ``root`` (``"."``: ``root`` itself).
        train_size: RandomResizedCrop output side; ``val_size`` and ``val_crop_ratio``: centre crop side and
            its fraction of the resized shorter side (224 and 0.875: resize to 256).
        interpolation: ``bicubic`` (official), ``bilinear``, ...
        augmentation: ``scale``, ``ratio``, ``flip_prob``, ``rand_augment`` (kwargs of ``RandAugment`` or
            None), ``color_jitter``, ``random_erasing`` (see
            :func:`~hrformer.data.cls_transforms.build_train_transform`).
        check_images: decode every file at setup, skipping unreadable ones with a logged count.
        on_bad_image: an unreadable training image met during training ``"raise"``s an error naming it, or is
            ``"skip"``ped and counted.
        synthetic: keyword arguments of ``ensure_synthetic_imagefolder``: the synthetic set is generated under
            ``root`` on first use (None: a real dataset).
    """

    def __init__(self, root: str, num_classes: int, train_dir: str = "train", val_dir: str = "val",
                 batch_size: int = 128, val_batch_size: int | None = None, num_workers: int = 8,
                 pin_memory: bool = False, train_size: int = 224, val_size: int = 224, val_crop_ratio: float = 0.875,
                 interpolation: str = "bicubic", augmentation: dict | None = None, check_images: bool = False,
                 synthetic: dict | None = None, on_bad_image: str = "raise"):
        super().__init__()
        self.root, self.num_classes = Path(root), int(num_classes)
        self.train_dir, self.val_dir = train_dir, val_dir
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory, self.on_bad_image = num_workers, pin_memory, on_bad_image
        self.check_images, self.synthetic = check_images, synthetic
        aug = dict(augmentation or {})
        self.random_erasing = float(aug.pop("random_erasing", 0.0))
        self.train_transform = build_train_transform(train_size, interpolation=interpolation, **aug)
        self.val_transform = build_val_transform(val_size, val_crop_ratio, interpolation)
        self.class_names: list[str] | None = None
        self.train_set: ImageFolderDataset | None = None
        self.val_set: ImageFolderDataset | None = None

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from .synthetic.imagefolder_shapes import ensure_synthetic_imagefolder

            ensure_synthetic_imagefolder(self.root, **self.synthetic)

    def _classes(self) -> list[str]:
        train_root = self.root / self.train_dir
        if not train_root.is_dir():  # evaluation without the training images: the validation folders
            log.warning("no training split at %s: class indices from the folders of %s", train_root,
                        self.root / self.val_dir)
            train_root = self.root / self.val_dir
        classes = find_classes(train_root)
        if len(classes) != self.num_classes:
            raise ValueError(f"{train_root} has {len(classes)} class folders but the model predicts "
                             f"{self.num_classes} classes (set data.num_classes={len(classes)})")
        return classes

    def setup(self, stage: str | None = None) -> None:
        if self.class_names is None:
            self.class_names = self._classes()
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ImageFolderDataset(self.root / self.train_dir, self.class_names, self.train_transform,
                                                self.random_erasing, self.check_images, train=True)
        if stage in (None, "fit", "validate", "test") and self.val_set is None:
            self.val_set = ImageFolderDataset(self.root / self.val_dir, self.class_names, self.val_transform,
                                              check_images=self.check_images, train=False)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """One RGB uint8 image -> the normalised validation input (3, S, S), e.g. for a demo."""
        return to_normalized_tensor(self.val_transform(image=image)["image"])

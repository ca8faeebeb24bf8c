"""Semantic segmentation datamodules on the real dataset layouts, and the shared loading / augmentation.

One base class, :class:`SegmentationDataModule`, does everything but finding the image/label pairs of a split
and knowing the raw label values; a subclass per layout supplies those two things:

=====================  ======================================================  ===========================
datamodule             layout under ``root``                                   raw label -> train id
=====================  ======================================================  ===========================
Cityscapes             ``leftImg8bit/{split}/{city}/*_leftImg8bit.png``,       official labelId -> trainId
                       ``gtFine/{split}/{city}/*_gtFine_labelIds.png``         (19 classes, rest 255)
ADE20K                 ``ADEChallengeData2016/images/{split}/*.jpg``,          0 -> 255, k -> k - 1
                       ``ADEChallengeData2016/annotations/{split}/*.png``      (150 classes)
PASCAL-Context         ``VOCdevkit/VOC2010/JPEGImages/*.jpg``,                 0 -> 255, k -> k - 1
                       ``.../SegmentationClassContext/*.png``, split lists     (59 classes)
                       ``.../ImageSets/SegmentationContext/{split}.txt``
COCO-Stuff-164k        ``images/{split}/*.jpg``, ``annotations/{split}/*.png`` 182 COCO ids -> 171 classes
                       (the official ``stuffthingmaps_trainval2017.zip``)      (11 unused ids invalid)
=====================  ======================================================  ===========================

Every label map is read as stored (single channel), mapped through a 256-entry lookup table to train ids in
``[0, num_classes)`` or the ignore label 255 (raw 255 is always ignore), and checked: a raw value the layout
does not define raises an error naming the file and the values.

Training samples: random rescale by a factor in ``scale_range`` (0.5-2.0) of ``base_size`` (the long side; None:
the image's own size), random crop of ``crop_size`` padded with the ignore label (image: zeros), horizontal flip
and photometric distortion (brightness, contrast, saturation, hue), all with albumentations, seeded per sample
from torch's generator (so ``seed_everything(workers=True)`` makes them reproducible).  Validation samples: the
image (optionally rescaled to the long side ``val_base_size`` for inference) and the label map at its original
resolution; metrics are always computed at the label's resolution.

Bad input: an image without a label file or a label without an image is skipped with a logged count and the
first names; a split with no pair at all, an unreadable image or label, a label that is not single-channel,
image and label of different sizes, or a label value outside the layout's range (other than 255) raise an error
naming the file(s).
"""

from __future__ import annotations

import inspect
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import albumentations as A
import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .common import TrainValDataModule, read_rgb, to_normalized_tensor
from .integrity import TruncatedImageError, image_problem

log = logging.getLogger(__name__)

IGNORE_INDEX = 255

#: Cityscapes labelId -> trainId (cityscapesScripts ``labels.py``); every other id 0..33 is ignored (255).
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
    **{i: IGNORE_INDEX for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)},
}

#: COCO-Stuff-164k ``stuffthingmaps`` value (COCO category id - 1, 0..181) -> train id 0..170.  The 11 values
#: of COCO thing ids that were never used (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91) are not valid labels.
COCO_STUFF_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_LABEL_TO_TRAIN: dict[int, int] = {
    raw: train for train, raw in enumerate(r for r in range(182) if r not in COCO_STUFF_UNUSED)}


def reduce_zero_label(num_classes: int) -> dict[int, int]:
    """ADE20K / PASCAL-Context convention: 0 ("other") -> ignore, k -> k - 1 for k = 1..num_classes."""
    return {0: IGNORE_INDEX, **{k: k - 1 for k in range(1, num_classes + 1)}}


def make_lut(label_map: Mapping[int, int], num_classes: int) -> np.ndarray:
    """Raw label value -> train id as a (256,) int16 table; -1 marks values the layout does not define.

    Raw 255 maps to the ignore label unless ``label_map`` says otherwise.  Raises ``ValueError`` if a target is
    neither in ``[0, num_classes)`` nor 255.
    """
    lut = np.full(256, -1, dtype=np.int16)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for raw, train in label_map.items():
        raw, train = int(raw), int(train)
        if not 0 <= raw <= 255:
            raise ValueError(f"label_map: raw value {raw} is not in 0..255")
        if not (0 <= train < num_classes or train == IGNORE_INDEX):
            raise ValueError(f"label_map: {raw} -> {train} is neither a class in [0, {num_classes}) nor "
                             f"{IGNORE_INDEX}")
        lut[raw] = train
    return lut


# --------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------


def read_label(path: str | Path, lut: np.ndarray) -> np.ndarray:
    """A stored label map mapped to train ids: (H, W) uint8 in ``[0, C)`` or 255.

    Raises ``OSError`` for an unreadable file and ``ValueError`` for a map with several channels or with raw
    values outside the layout's range (``lut`` -1), naming the file and the values.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise OSError(f"cannot read label map {path}: missing, unreadable or not a decodable image")
    problem = image_problem(path)
    if problem is not None:
        raise TruncatedImageError(f"cannot read label map {path}: {problem}")
    if raw.ndim != 2:
        raise ValueError(f"label map {path} has {raw.shape[2]} channels; expected a single-channel PNG of class "
                         "ids (a colour visualisation is not a label map)")
    if raw.dtype != np.uint8:
        if raw.max(initial=0) > 255:
            raise ValueError(f"label map {path} has values up to {int(raw.max())}, outside this dataset's label "
                             "range 0..255")
        raw = raw.astype(np.uint8)
    mapped = lut[raw]
    if (mapped < 0).any():
        bad = np.unique(raw[mapped < 0])
        valid = np.flatnonzero(lut >= 0)
        raise ValueError(f"label map {path} has values {bad[:10].tolist()} outside this dataset's label range "
                         f"(valid raw values: {_ranges(valid)})")
    return mapped.astype(np.uint8)


def _ranges(values: np.ndarray) -> str:
    """[0 1 2 3 7 255] -> '0-3, 7, 255'."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def resize_long_side(image: np.ndarray, long_side: int | None) -> np.ndarray:
    """Bilinear resize so that ``max(H, W) == long_side`` (None: unchanged)."""
    if not long_side:
        return image
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------------------


class RandomRescale(A.DualTransform):
    """Resize image and mask by a random factor in ``ratio_range`` of ``base_size`` (long side; None: own size).

    Image bilinear, mask nearest (labels are never blended).
    """

    def __init__(self, ratio_range: Sequence[float] = (0.5, 2.0), base_size: int | None = None, p: float = 1.0):
        super().__init__(p=p)
        self.ratio_range, self.base_size = (float(ratio_range[0]), float(ratio_range[1])), base_size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        s = self.py_random.uniform(*self.ratio_range)
        if self.base_size:
            s *= self.base_size / max(h, w)
        return {"out_hw": (max(1, round(h * s)), max(1, round(w * s)))}

    def apply(self, img: np.ndarray, out_hw: tuple[int, int], **params) -> np.ndarray:
        return cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, out_hw: tuple[int, int], **params) -> np.ndarray:
        return cv2.resize(mask, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ratio_range", "base_size")


def train_transform(crop_size: Sequence[int], scale_range: Sequence[float] = (0.5, 2.0),
                    base_size: int | None = None, flip_prob: float = 0.5, photometric_prob: float = 0.5,
                    brightness: float = 32 / 255, contrast: float = 0.5, saturation: int = 30,
                    hue: int = 18) -> A.Compose:
    """The training augmentation (albumentations): rescale, pad + random crop, flip, photometric distortion.

    ``crop_size`` is (h, w); padding uses 0 for the image and the ignore label for the mask, at a random position
    (so small images land anywhere in the crop).  Photometric distortion in the spirit of mmseg's
    ``PhotoMetricDistortion``: brightness +-``brightness`` (of 255), contrast x(1 +- ``contrast``), saturation and
    hue shifts, each with probability ``photometric_prob``.
    """
    ch, cw = (int(v) for v in crop_size)
    steps: list[A.BasicTransform] = [
        RandomRescale(scale_range, base_size),
        A.PadIfNeeded(min_height=ch, min_width=cw, position="random", border_mode=cv2.BORDER_CONSTANT, fill=0,
                      fill_mask=IGNORE_INDEX),
        A.RandomCrop(ch, cw),
        A.HorizontalFlip(p=flip_prob),
    ]
    if photometric_prob > 0:
        steps += [
            A.RandomBrightnessContrast(brightness_limit=brightness, contrast_limit=contrast, p=photometric_prob),
            A.HueSaturationValue(hue_shift_limit=hue, sat_shift_limit=saturation, val_shift_limit=0,
                                 p=photometric_prob),
        ]
    return A.Compose(steps)


# --------------------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegSample:
    """One image/label pair; ``name`` identifies it in pictures and messages."""

    image: Path
    label: Path
    name: str


class SegmentationDataset(Dataset):
    """Image/label pairs -> samples.

    Training: ``{"image": (3, h, w) float normalised crop, "label": (h, w) uint8 train ids / 255, "name"}``.
    Validation: ``{"image": (3, h', w') the whole image (rescaled to the long side ``val_base_size`` if set),
    "label": (H, W) at the stored resolution, "name"}``.
    """

    def __init__(self, samples: Sequence[SegSample], lut: np.ndarray, train: bool = False,
                 transform: A.Compose | None = None, val_base_size: int | None = None):
        if train and transform is None:
            raise ValueError("a training dataset needs a transform")
        self.samples, self.lut, self.train = list(samples), lut, train
        self.transform, self.val_base_size = transform, val_base_size

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB image, train-id label) of sample ``index``, checked to have the same size."""
        s = self.samples[index]
        image, label = read_rgb(s.image), read_label(s.label, self.lut)
        if image.shape[:2] != label.shape:
            raise ValueError(f"image {s.image} is {image.shape[1]}x{image.shape[0]} but its label map {s.label} is "
                             f"{label.shape[1]}x{label.shape[0]} (width x height)")
        return image, label

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.load(index)
        if self.train:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        else:
            image = resize_long_side(image, self.val_base_size)
        return {"image": to_normalized_tensor(image), "label": torch.from_numpy(np.ascontiguousarray(label)),
                "name": self.samples[index].name}


def seg_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of possibly different sizes: images padded with 0, labels with the ignore label.

    Adds ``image_hw`` and ``label_hw`` (B, 2) int64: the valid (h, w) of each image and label.
    """
    def pad_stack(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
        h = max(t.shape[-2] for t in tensors)
        w = max(t.shape[-1] for t in tensors)
        out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), value)
        for i, t in enumerate(tensors):
            out[i, ..., : t.shape[-2], : t.shape[-1]] = t
        return out

    images = [s["image"] for s in samples]
    labels = [s["label"] for s in samples]
    return {
        "image": pad_stack(images, 0.0),
        "label": pad_stack(labels, IGNORE_INDEX),
        "image_hw": torch.tensor([t.shape[-2:] for t in images], dtype=torch.long),
        "label_hw": torch.tensor([t.shape[-2:] for t in labels], dtype=torch.long),
        "name": [s["name"] for s in samples],
    }


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sampler for DDP: rank r takes samples r, r + R, r + 2R, ... and nothing twice.

    ``DistributedSampler`` pads the dataset to a multiple of the world size by repeating samples, which would
    count those images twice in the confusion matrix.  Being a ``DistributedSampler`` subclass, Lightning keeps
    it instead of inserting its own.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))
        self.total_size = len(self.dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------------------------------------
# datamodules
# --------------------------------------------------------------------------------------------------------


def _log_skips(what: str, skipped: Counter, examples: dict[str, list[str]]) -> None:
    for reason, n in skipped.items():
        log.warning("%s: skipped %d %s (e.g. %s)", what, n, reason, ", ".join(examples[reason][:3]))


class SegmentationDataModule(TrainValDataModule):
    """Train/val image-label pairs of one layout (subclasses: :meth:`find_pairs` and ``default_label_map``).

    Args:
        root: dataset root (see the module docstring for each layout).
        num_classes, class_names: the train-id classes (``class_names[i]`` names train id i).
        palette: optional RGB colour per class for pictures (None: a fixed generated palette).
        class_weights: optional per-class cross-entropy weights; carried for the task's loss
            (``task.task.loss.class_weights: ${data.class_weights}``).
        train_split, val_split: split names of the layout.
        crop_size: training crop (h, w); ``base_size``: long side the random rescale is relative to (None: the
            image's own size); ``scale_range``: the random rescale factors.
        val_base_size: long side validation images are resized to for inference (None: as stored).
        augmentation: further keyword arguments of :func:`train_transform` (``flip_prob``, ``photometric_prob``,
            ``brightness``, ``contrast``, ``saturation``, ``hue``).
        label_map: raw label value -> train id, replacing the layout's ``default_label_map`` (e.g. for a
            synthetic set in the Cityscapes layout).
        synthetic: a callable ``synthetic(root)`` that creates the dataset on first use (e.g. a partial of
            :func:`hrformer.data.synthetic.cityscapes_seg.ensure_synthetic_cityscapes_seg`), or None.
        on_bad_image: an unreadable training image or label ``"raise"``s an error naming it, or the pair is
            ``"skip"``ped and counted.
    """

    default_label_map: ClassVar[Mapping[int, int]] = {}
    collate_fn = staticmethod(seg_collate)

    def __init__(self, root: str, num_classes: int, class_names: Sequence[str],
                 palette: Sequence[Sequence[int]] | None = None, class_weights: Sequence[float] | None = None,
                 train_split: str = "train", val_split: str = "val", crop_size: Sequence[int] = (512, 512),
                 base_size: int | None = None, scale_range: Sequence[float] = (0.5, 2.0),
                 val_base_size: int | None = None, batch_size: int = 8, val_batch_size: int = 1,
                 num_workers: int = 4, pin_memory: bool = False, augmentation: Mapping[str, Any] | None = None,
                 label_map: Mapping[int, int] | None = None, synthetic: Callable[[Path], Any] | None = None,
                 on_bad_image: str = "raise"):
        super().__init__()
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        if palette is not None and len(palette) != num_classes:
            raise ValueError(f"{len(palette)} palette colours for num_classes={num_classes}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for num_classes={num_classes}")
        self.root = Path(root)
        self.num_classes, self.class_names = int(num_classes), [str(n) for n in class_names]
        self.palette, self.class_weights = palette, class_weights
        self.splits = {"train": train_split, "val": val_split}
        self.crop_size, self.base_size, self.scale_range = tuple(crop_size), base_size, tuple(scale_range)
        self.val_base_size = val_base_size
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory, self.on_bad_image = num_workers, pin_memory, on_bad_image
        self.augmentation = dict(augmentation or {})
        unknown = set(self.augmentation) - set(inspect.signature(train_transform).parameters) - {
            "crop_size", "scale_range", "base_size"}
        if unknown:
            raise ValueError(f"unknown segmentation augmentation options {sorted(unknown)} (valid: flip_prob, "
                             "photometric_prob, brightness, contrast, saturation, hue); keys of another task's "
                             "experiment? compose segmentation runs as experiment=seg_... or task=seg data=...")
        self.lut = make_lut(self.default_label_map if label_map is None else label_map, self.num_classes)
        self.synthetic = synthetic
        self.train_set: SegmentationDataset | None = None
        self.val_set: SegmentationDataset | None = None

    # ---- layout
    def find_pairs(self, split: str) -> tuple[list[SegSample], Counter, dict[str, list[str]]]:
        """The split's pairs, and the skipped files: a Counter by reason and example names per reason."""
        raise NotImplementedError

    def samples(self, split: str) -> list[SegSample]:
        """:meth:`find_pairs` with the skips logged; no pair at all raises ``FileNotFoundError``."""
        pairs, skipped, examples = self.find_pairs(split)
        _log_skips(f"{type(self).__name__} {self.root} split {split!r}", skipped, examples)
        if not pairs:
            raise FileNotFoundError(f"no image/label pairs for split {split!r} under {self.root} "
                                    f"({type(self).__name__}: see data/README.md for the layout)")
        log.info("%s split %r: %d image/label pairs", type(self).__name__, split, len(pairs))
        return pairs

    @staticmethod
    def pair_by_name(images: Sequence[Path], label_for: Callable[[Path], Path], name_for: Callable[[Path], str],
                     labels: Sequence[Path] = (), image_for: Callable[[Path], Path] | None = None,
                     ) -> tuple[list[SegSample], Counter, dict[str, list[str]]]:
        """Pairs from image files and a rule giving each image's label path (and optionally the reverse rule to
        report labels without image).  Images without label and labels without image are skipped and counted."""
        skipped: Counter = Counter()
        examples: dict[str, list[str]] = {}
        pairs = []
        for img in sorted(images):
            lbl = label_for(img)
            if lbl.is_file():
                pairs.append(SegSample(img, lbl, name_for(img)))
            else:
                skipped["images without a label file"] += 1
                examples.setdefault("images without a label file", []).append(f"{img} (no {lbl.name})")
        if image_for is not None:
            for lbl in sorted(labels):
                img = image_for(lbl)
                if not img.is_file():
                    skipped["label files without an image"] += 1
                    examples.setdefault("label files without an image", []).append(f"{lbl} (no {img.name})")
        return pairs, skipped, examples

    # ---- Lightning hooks
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic(self.root)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            transform = train_transform(self.crop_size, self.scale_range, self.base_size, **self.augmentation)
            self.train_set = SegmentationDataset(self.samples(self.splits["train"]), self.lut, train=True,
                                                 transform=transform)
        if stage in (None, "fit", "validate", "test") and self.val_set is None:
            self.val_set = SegmentationDataset(self.samples(self.splits["val"]), self.lut, train=False,
                                               val_base_size=self.val_base_size)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        sampler = None
        if not train and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnpaddedDistributedSampler(dataset)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=train,
                          collate_fn=seg_collate, persistent_workers=self.num_workers > 0)


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes fine annotations: ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` and
    ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``; labelIds -> 19 trainIds by the official table."""

    default_label_map = CITYSCAPES_LABEL_TO_TRAIN
    IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"

    def find_pairs(self, split: str):
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split

        def stem(p: Path, suffix: str) -> str:
            return p.name[: -len(suffix)]

        return self.pair_by_name(
            list(image_dir.glob(f"*/*{self.IMAGE_SUFFIX}")),
            lambda p: label_dir / p.parent.name / (stem(p, self.IMAGE_SUFFIX) + self.LABEL_SUFFIX),
            lambda p: stem(p, self.IMAGE_SUFFIX),
            list(label_dir.glob(f"*/*{self.LABEL_SUFFIX}")),
            lambda p: image_dir / p.parent.name / (stem(p, self.LABEL_SUFFIX) + self.IMAGE_SUFFIX))


class ADE20KDataModule(SegmentationDataModule):
    """ADE20K SceneParsing: ``ADEChallengeData2016/{images,annotations}/{training,validation}/``; 0 -> ignore,
    1..150 -> 0..149."""

    default_label_map = reduce_zero_label(150)

    def find_pairs(self, split: str):
        base = self.root / "ADEChallengeData2016"
        image_dir, label_dir = base / "images" / split, base / "annotations" / split
        return self.pair_by_name(list(image_dir.glob("*.jpg")), lambda p: label_dir / (p.stem + ".png"),
                                 lambda p: p.stem, list(label_dir.glob("*.png")),
                                 lambda p: image_dir / (p.stem + ".jpg"))


class PascalContextDataModule(SegmentationDataModule):
    """PASCAL-Context, 59 classes, as prepared by mmsegmentation's ``pascal_context.py`` converter:
    ``VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext}`` and the split lists in
    ``ImageSets/SegmentationContext/{train,val}.txt``; 0 (background) -> ignore, 1..59 -> 0..58."""

    default_label_map = reduce_zero_label(59)

    def find_pairs(self, split: str):
        base = self.root / "VOCdevkit" / "VOC2010"
        list_file = base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"split list not found: {list_file}")
        ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        images = [base / "JPEGImages" / f"{i}.jpg" for i in ids]
        skipped: Counter = Counter()
        examples: dict[str, list[str]] = {}
        present = []
        for img in images:
            if img.is_file():
                present.append(img)
            else:
                skipped[f"ids of {list_file.name} without an image"] += 1
                examples.setdefault(f"ids of {list_file.name} without an image", []).append(str(img))
        pairs, more, more_examples = self.pair_by_name(
            present, lambda p: base / "SegmentationClassContext" / (p.stem + ".png"), lambda p: p.stem)
        skipped.update(more)
        for k, v in more_examples.items():
            examples.setdefault(k, []).extend(v)
        return pairs, skipped, examples


class COCOStuffDataModule(SegmentationDataModule):
    """COCO-Stuff-164k: ``images/{train2017,val2017}/*.jpg`` and the official ``stuffthingmaps``
    ``annotations/{train2017,val2017}/*.png`` (values: COCO category id - 1, 255 unlabelled) -> 171 classes."""

    default_label_map = COCO_STUFF_LABEL_TO_TRAIN

    def find_pairs(self, split: str):
        image_dir, label_dir = self.root / "images" / split, self.root / "annotations" / split
        labels = [p for p in label_dir.glob("*.png") if not p.name.endswith("_labelTrainIds.png")]
        return self.pair_by_name(list(image_dir.glob("*.jpg")), lambda p: label_dir / (p.stem + ".png"),
                                 lambda p: p.stem, labels, lambda p: image_dir / (p.stem + ".jpg"))

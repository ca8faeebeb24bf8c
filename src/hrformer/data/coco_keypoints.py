"""COCO person keypoints for top-down heatmap pose estimation.

Layout (the real one, and the synthetic set the project generates in the same format)::

    root/images/{train2017,val2017}/*.jpg
    root/annotations/person_keypoints_{train,val}2017.json
    (optional) a detection results json: [{"image_id", "category_id": 1, "bbox": [x, y, w, h], "score"}, ...]

Every sample is one person: its box (ground truth, or a detector's for evaluation) becomes a centre and
a crop size with the input aspect ratio and 1.25 padding, the image is warped to the input size, the
keypoints are encoded to Gaussian heatmaps by the codec.  Training augmentation: horizontal flip with
left/right swap, half-body crops, random scale and rotation, photometric distortion (albumentations).

Bad input is never silent: a malformed json raises an error naming the file; people without labelled
keypoints, zero-area or out-of-image boxes and missing image files are skipped with a logged count per
reason; an image that cannot be decoded raises an error naming the file and the annotation id.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from ..codecs.heatmap import COCO_FLIP_PAIRS, HeatmapCodec, flip_keypoints
from .common import TrainValDataModule, read_rgb, to_normalized_tensor
from .geometry import affine_points, box_to_center_size, get_affine_transform, warp_to_crop

log = logging.getLogger(__name__)

NUM_JOINTS = 17
UPPER_BODY = tuple(range(11))
LOWER_BODY = tuple(range(11, 17))


def load_json(path: str | Path) -> Any:
    """Read a json file; a missing, truncated or malformed file raises an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed json in {path}: {err}") from None


@dataclass
class PersonInstance:
    """One person to crop: image, box (gt or detected) and, for gt boxes, keypoints (17, 3) in image px."""

    image_id: int
    image_file: str
    ann_id: int  # -1 for detected boxes
    center: np.ndarray
    size: np.ndarray
    box_score: float
    keypoints: np.ndarray  # (17, 3): x, y, v; zeros for detections


def crop_and_normalize(image: np.ndarray, center: Sequence[float] | np.ndarray, size: Sequence[float] | np.ndarray,
                       input_size: Sequence[int], rotation: float = 0.0,
                       augment: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """RGB uint8 image + crop region -> the normalised (3, h, w) float32 network input.

    The region (``center``, ``size`` in image px, ``rotation`` in degrees) is warped to ``input_size`` ``(w, h)``
    with :func:`~hrformer.data.geometry.get_affine_transform` (bilinear, zeros outside the image), ``augment``
    (e.g. photometric distortion, uint8 crop in and out) is applied to the crop, then ImageNet normalisation.
    """
    crop = warp_to_crop(image, center, size, rotation, input_size)
    if augment is not None:
        crop = augment(crop)
    return to_normalized_tensor(crop)


def _clean_box(bbox: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """Clip an [x, y, w, h] box to the image as the official code does; None if nothing is left."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1.0)), min(height - 1.0, y1 + max(0.0, h - 1.0))
    if w <= 0 or h <= 0 or x2 < x1 or y2 < y1 or (x2 - x1) * (y2 - y1) <= 0:
        return None
    return x1, y1, x2 - x1, y2 - y1


def load_instances(ann_file: str | Path, image_dir: str | Path, aspect_ratio: float, bbox_source: str = "gt",
                   det_file: str | Path | None = None, det_score_thr: float = 0.0, padding: float = 1.25,
                   require_keypoints: bool = True) -> tuple[list[PersonInstance], Counter]:
    """Person instances of one split, and a Counter of skipped instances by reason."""
    data = load_json(ann_file)
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{ann_file} is not a COCO annotation file: no '{key}' key")
    image_dir = Path(image_dir)
    images = {}
    skipped: Counter = Counter()
    for img in data["images"]:
        if not (image_dir / img["file_name"]).is_file():  # its people are counted as skipped below
            log.warning("image %s (id %s) listed in %s is missing", image_dir / img["file_name"], img["id"], ann_file)
            continue
        images[img["id"]] = img
    instances: list[PersonInstance] = []
    if bbox_source == "gt":
        for ann in data["annotations"]:
            img = images.get(ann["image_id"])
            if img is None:
                skipped["image file missing"] += 1
                continue
            if ann.get("category_id", 1) != 1 or ann.get("iscrowd", 0):
                skipped["not a single person"] += 1
                continue
            kpts = np.asarray(ann.get("keypoints", [0] * 3 * NUM_JOINTS), dtype=np.float32)
            if kpts.size != 3 * NUM_JOINTS:
                raise ValueError(f"{ann_file}: annotation {ann['id']} has {kpts.size // 3} keypoints, "
                                 f"expected {NUM_JOINTS}")
            kpts = kpts.reshape(NUM_JOINTS, 3)
            if require_keypoints and kpts[:, 2].max() <= 0:
                skipped["no labelled keypoints"] += 1
                continue
            box = _clean_box(ann.get("bbox", (0, 0, 0, 0)), img["width"], img["height"])
            if box is None:
                skipped["zero-area or out-of-image box"] += 1
                continue
            center, size = box_to_center_size(box, aspect_ratio, padding)
            instances.append(PersonInstance(ann["image_id"], img["file_name"], int(ann["id"]), center, size, 1.0,
                                            kpts))
    elif bbox_source == "det":
        if det_file is None:
            raise ValueError("bbox_source='det' needs det_file")
        dets = load_json(det_file)
        if not isinstance(dets, list):
            raise ValueError(f"{det_file} is not a COCO detection results list")
        for det in dets:
            img = images.get(det.get("image_id"))
            if det.get("category_id", 1) != 1:
                continue
            if img is None:
                skipped["image file missing"] += 1
                continue
            if det["score"] < det_score_thr:
                skipped["detection score below threshold"] += 1
                continue
            box = _clean_box(det["bbox"], img["width"], img["height"])
            if box is None:
                skipped["zero-area or out-of-image box"] += 1
                continue
            center, size = box_to_center_size(box, aspect_ratio, padding)
            instances.append(PersonInstance(det["image_id"], img["file_name"], -1, center, size,
                                            float(det["score"]), np.zeros((NUM_JOINTS, 3), np.float32)))
    else:
        raise ValueError(f"bbox_source must be 'gt' or 'det', got {bbox_source!r}")
    if skipped:
        log.info("%s: %d person instances, skipped %s", ann_file, len(instances), dict(skipped))
    return instances, skipped


class TopDownCOCODataset(Dataset):
    """Person crops with heatmap targets.

    Sample dict: ``image`` (3, H, W) float normalised, ``target`` (17, h, w), ``target_weight`` (17,),
    ``center`` (2,), ``size`` (2,) crop region in image px, ``image_id``, ``ann_id``, ``box_score``,
    ``area`` (crop area, used by OKS-NMS), ``keypoints`` (17, 3) image px (zeros for detections).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, codec: HeatmapCodec, train: bool = False,
                 bbox_source: str = "gt", det_file: str | Path | None = None, det_score_thr: float = 0.0,
                 flip_prob: float = 0.5, half_body_prob: float = 0.3, half_body_min_joints: int = 8,
                 scale_factor: float = 0.35, rotation_factor: float = 45.0, rotation_prob: float = 0.6,
                 photometric: bool = True):
        self.ann_file, self.image_dir, self.codec, self.train = Path(ann_file), Path(image_dir), codec, train
        self.input_size = tuple(codec.input_size)  # (w, h)
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.instances, self.skipped = load_instances(
            ann_file, image_dir, self.aspect_ratio, bbox_source, det_file, det_score_thr,
            require_keypoints=train or bbox_source == "gt")
        self.flip_prob, self.half_body_prob, self.half_body_min_joints = flip_prob, half_body_prob, half_body_min_joints
        self.scale_factor, self.rotation_factor, self.rotation_prob = scale_factor, rotation_factor, rotation_prob
        self.photometric = A.Compose([
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.HueSaturationValue(10, 20, 10, p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
        ]) if (train and photometric) else None

    def __len__(self) -> int:
        return len(self.instances)

    def read_image(self, inst: PersonInstance) -> np.ndarray:
        path = self.image_dir / inst.image_file
        try:
            return read_rgb(path)
        except OSError as err:
            raise OSError(f"{err} (annotation id {inst.ann_id}, image id {inst.image_id})") from None

    def _half_body(self, kpts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        visible = kpts[:, 2] > 0
        upper = [j for j in UPPER_BODY if visible[j]]
        lower = [j for j in LOWER_BODY if visible[j]]
        chosen = upper if (rng.standard_normal() < 0.5 and len(upper) > 2) else lower if len(lower) > 2 else upper
        if len(chosen) < 2:
            return None
        pts = kpts[chosen, :2]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        center, size = box_to_center_size((x0, y0, x1 - x0, y1 - y0), self.aspect_ratio, padding=1.5)
        return center, size

    def __getitem__(self, index: int) -> dict[str, Any]:
        inst = self.instances[index]
        image = self.read_image(inst)
        center, size, kpts = inst.center.copy(), inst.size.copy(), inst.keypoints.copy()
        rotation = 0.0
        if self.train:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())   # every random choice of this sample follows it
            rng = np.random.default_rng(seed)
            if self.photometric is not None:
                self.photometric.set_random_seed(seed)
            if (kpts[:, 2] > 0).sum() > self.half_body_min_joints and rng.random() < self.half_body_prob:
                half = self._half_body(kpts, rng)
                if half is not None:
                    center, size = half
            sf, rf = self.scale_factor, self.rotation_factor
            size = size * np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
            if rng.random() <= self.rotation_prob:
                rotation = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf))
            if rng.random() < self.flip_prob:
                image = image[:, ::-1]
                kpts[:, :2], kpts[:, 2] = flip_keypoints(kpts[:, :2], kpts[:, 2], image.shape[1], COCO_FLIP_PAIRS)
                center[0] = image.shape[1] - center[0] - 1
        augment = None if self.photometric is None else (lambda crop: self.photometric(image=crop)["image"])
        tensor = crop_and_normalize(image, center, size, self.input_size, rotation, augment)
        joints = affine_points(kpts[:, :2], get_affine_transform(center, size, rotation, self.input_size))
        target, weight = self.codec.encode(joints, kpts[:, 2])
        return {
            "image": tensor,
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(weight),
            "center": torch.from_numpy(inst.center.astype(np.float32)),
            "size": torch.from_numpy(inst.size.astype(np.float32)),
            "image_id": inst.image_id,
            "ann_id": inst.ann_id,
            "box_score": float(inst.box_score),
            "area": float(inst.size[0] * inst.size[1]),
            "keypoints": torch.from_numpy(inst.keypoints),
        }


class COCOKeypointsDataModule(TrainValDataModule):
    """Train/val person crops from a COCO keypoints folder.

    Args:
        root: dataset root (``images/``, ``annotations/``).
        codec: the heatmap codec (shared with the task).
        train_ann, val_ann, train_images, val_images: paths relative to ``root`` (or absolute).
        bbox_source: ``"gt"`` or ``"det"`` boxes for validation; ``det_file`` and ``det_score_thr`` for ``det``.
        synthetic: if given, keyword arguments of ``ensure_synthetic_coco_pose``: the synthetic set is
            generated under ``root`` on first use.
        on_bad_image: an unreadable training image ``"raise"``s an error naming it, or is ``"skip"``ped and counted
            (validation always raises: a skipped image would change the metric).
    """

    def __init__(self, root: str, codec: HeatmapCodec, batch_size: int = 32, val_batch_size: int | None = None,
                 num_workers: int = 2, train_ann: str = "annotations/person_keypoints_train2017.json",
                 val_ann: str = "annotations/person_keypoints_val2017.json", train_images: str = "images/train2017",
                 val_images: str = "images/val2017", bbox_source: str = "gt", det_file: str | None = None,
                 det_score_thr: float = 0.0, augmentation: dict | None = None, synthetic: dict | None = None,
                 pin_memory: bool = False, on_bad_image: str = "raise"):
        super().__init__()
        self.root = Path(root)
        self.codec = codec
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory, self.on_bad_image = num_workers, pin_memory, on_bad_image
        self.paths = {"train": (train_ann, train_images), "val": (val_ann, val_images)}
        self.bbox_source, self.det_file, self.det_score_thr = bbox_source, det_file, det_score_thr
        self.augmentation = dict(augmentation or {})
        self.synthetic = synthetic
        self.train_set: TopDownCOCODataset | None = None
        self.val_set: TopDownCOCODataset | None = None

    def _path(self, p: str | None) -> Path | None:
        return None if p is None else (self.root / p if not Path(p).is_absolute() else Path(p))

    @property
    def val_ann_file(self) -> Path:
        return self._path(self.paths["val"][0])

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from .synthetic.coco_pose import ensure_synthetic_coco_pose

            ensure_synthetic_coco_pose(self.root, **self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            ann, images = self.paths["train"]
            self.train_set = TopDownCOCODataset(self._path(ann), self._path(images), self.codec, train=True,
                                                **self.augmentation)
        if stage in (None, "fit", "validate", "test") and self.val_set is None:
            ann, images = self.paths["val"]
            self.val_set = TopDownCOCODataset(self._path(ann), self._path(images), self.codec, train=False,
                                              bbox_source=self.bbox_source, det_file=self._path(self.det_file),
                                              det_score_thr=self.det_score_thr)

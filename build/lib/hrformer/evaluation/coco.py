"""COCO keypoint evaluation: OKS, OKS-NMS, rescoring, results format, pycocotools AP, a torchmetrics Metric.

Follows the official HRNet pose code (``lib/dataset/coco.py::evaluate``, ``lib/nms/nms.py``):

* ``rescore``: instance score = box score x mean of the keypoint scores above ``vis_thr`` (0.2); when no
  keypoint is above the threshold the mean term is 0 (official: ``kpt_score`` stays 0): instance score 0.
* ``oks_nms``: greedy by score, drop every instance whose OKS with a kept one is > ``thr`` (0.9), per image.
  The official evaluation calls it without a visibility threshold, with ``area`` = the crop area
  ``scale_w * scale_h * 200**2``.
* ``evaluate_keypoints``: ``COCOeval(coco_gt, coco_dt, "keypoints")``; the ten ``stats`` in order
  ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl``.

``COCOKeypointAP`` gathers per-instance predictions across ranks (``dist_reduce_fx="cat"`` list states) and
every rank runs the same pycocotools evaluation on the gathered set (identical results everywhere, so the
values can be logged without ``sync_dist``); only rank 0 writes the optional results file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

__all__ = [
    "COCO_SIGMAS",
    "STAT_NAMES",
    "COCOKeypointAP",
    "evaluate_keypoints",
    "load_coco_gt",
    "load_results",
    "oks_iou",
    "oks_nms",
    "rescore",
    "to_coco_results",
]

#: Per-keypoint OKS sigmas of the 17 COCO keypoints (pycocotools ``kpt_oks_sigmas``).
COCO_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

#: Names of ``COCOeval.stats`` for keypoints, in order.
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


# -------------------------------------------------------------------------------------- OKS / NMS / rescoring
def oks_iou(g, d, area_g: float, areas_d, sigmas: Sequence[float] = COCO_SIGMAS,
            vis_thr: float | None = None) -> np.ndarray:
    """OKS between one instance ``g`` and ``N`` instances ``d`` (official ``lib/nms/nms.py::oks_iou``).

    ``g``: ``(K*3,)`` or ``(K, 3)`` as ``x, y, v``; ``d``: ``(N, K, 3)`` or ``(N, K*3)``; ``area_g`` scalar,
    ``areas_d`` ``(N,)``.  ``e = d^2 / (2*sigma)^2 / ((area_g + area_d)/2 + eps) / 2``,
    OKS = mean of ``exp(-e)``.
    With ``vis_thr`` the mean runs over the keypoints whose **detection** ``v`` is above it: the official
    ``list(vg > thr) and list(vd > thr)`` evaluates to the second list (mmpose uses the logical and of both);
    0 when no keypoint is left.
    """
    sig = np.asarray(sigmas, dtype=np.float64)
    k = sig.shape[0]
    g = np.asarray(g, dtype=np.float64).reshape(k, 3)
    d = np.asarray(d, dtype=np.float64).reshape(-1, k, 3)
    areas_d = np.asarray(areas_d, dtype=np.float64).reshape(-1)
    if d.shape[0] != areas_d.shape[0]:
        raise ValueError(f"oks_iou: {d.shape[0]} instances but {areas_d.shape[0]} areas")
    variances = (sig * 2) ** 2
    dist2 = (d[:, :, 0] - g[None, :, 0]) ** 2 + (d[:, :, 1] - g[None, :, 1]) ** 2  # (N, K)
    scale = (float(area_g) + areas_d) / 2 + np.spacing(1)  # (N,)
    e = dist2 / variances[None, :] / scale[:, None] / 2
    if vis_thr is None:
        return np.exp(-e).mean(axis=1) if k > 0 else np.zeros(d.shape[0])
    mask = d[:, :, 2] > vis_thr
    count = mask.sum(axis=1)
    total = np.where(mask, np.exp(-e), 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_nms(instances: list[dict], thr: float = 0.9, sigmas: Sequence[float] = COCO_SIGMAS,
            vis_thr: float | None = None) -> list[int]:
    """Greedy OKS-NMS over the instances of **one** image (official ``oks_nms``); returns the kept indices.

    Each instance is a dict with ``keypoints`` (``(K, 3)`` or ``(K*3,)``: x, y, score), ``score``, ``area``.
    Instances are visited by descending score (``np.argsort(scores)[::-1]`` as the official code); any
    instance whose OKS with the kept one is ``> thr`` is suppressed.  Kept indices come in visiting order.
    """
    if len(instances) == 0:
        return []
    k = len(sigmas)
    scores = np.array([float(inst["score"]) for inst in instances], dtype=np.float64)
    kpts = np.stack([np.asarray(inst["keypoints"], dtype=np.float64).reshape(k * 3) for inst in instances])
    areas = np.array([float(inst["area"]) for inst in instances], dtype=np.float64)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ovr = oks_iou(kpts[i], kpts[rest], areas[i], areas[rest], sigmas, vis_thr)
        order = rest[ovr <= thr]
    return keep


def rescore(keypoint_scores, box_scores, vis_thr: float = 0.2) -> np.ndarray:
    """Official rescoring: ``box_score * mean(keypoint scores > vis_thr)``; mean term 0 if none is above.

    ``keypoint_scores``: ``(N, K)``; ``box_scores``: ``(N,)``; returns ``(N,)`` float64.
    """
    ks = _np(keypoint_scores).astype(np.float64)
    bs = _np(box_scores).astype(np.float64).reshape(-1)
    if ks.ndim != 2 or ks.shape[0] != bs.shape[0]:
        raise ValueError(f"rescore: keypoint_scores {ks.shape} and box_scores {bs.shape} "
                         "do not fit (N, K) / (N,)")
    mask = ks > vis_thr
    count = mask.sum(axis=1)
    mean = np.where(count > 0, np.where(mask, ks, 0.0).sum(axis=1) / np.maximum(count, 1), 0.0)
    return bs * mean


def to_coco_results(image_ids, keypoints, keypoint_scores, scores, category_id: int = 1) -> list[dict]:
    """COCO keypoint results: ``{"image_id", "category_id", "keypoints": [x1, y1, s1, ...], "score"}``.

    ``keypoints`` ``(N, K, 2)`` in image pixels, ``keypoint_scores`` ``(N, K)`` (written as the third value,
    as the official code does), ``scores`` ``(N,)`` instance scores.  All values become plain Python numbers.
    """
    ids = _np(image_ids).reshape(-1)
    kp = _np(keypoints).astype(np.float64)
    ks = _np(keypoint_scores).astype(np.float64)
    sc = _np(scores).astype(np.float64).reshape(-1)
    n = ids.shape[0]
    if kp.ndim != 3 or kp.shape[0] != n or kp.shape[2] != 2 or ks.shape != kp.shape[:2] or sc.shape[0] != n:
        raise ValueError(f"to_coco_results: shapes image_ids {ids.shape}, keypoints {kp.shape}, "
                         f"keypoint_scores {ks.shape}, scores {sc.shape} do not fit "
                         "(N,), (N,K,2), (N,K), (N,)")
    flat = np.concatenate([kp, ks[:, :, None]], axis=2).reshape(n, -1)
    return [{"image_id": int(ids[i]), "category_id": int(category_id), "keypoints": flat[i].tolist(),
             "score": float(sc[i])} for i in range(n)]


# --------------------------------------------------------------------------------------- loading and COCOeval
def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} file {path} is not valid JSON (malformed or truncated?): {err}") from err


def load_coco_gt(ann_file: str | os.PathLike | COCO) -> COCO:
    """A pycocotools ``COCO`` from an annotation file (quietly); a ``COCO`` object is returned as is.

    Raises ``FileNotFoundError``/``ValueError`` naming the file when it is missing, malformed or truncated.
    """
    if isinstance(ann_file, COCO):
        return ann_file
    data = _read_json(ann_file, "COCO annotation")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ValueError(f"COCO annotation file {ann_file} lacks the 'images', 'annotations' and "
                         "'categories' lists")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_results(results: str | os.PathLike | list[dict]) -> list[dict]:
    """Keypoint results as a list of dicts (read from JSON when a path is given; ValueError if malformed)."""
    name = "results"
    if isinstance(results, (str, os.PathLike)):
        name = f"results file {results}"
        results = _read_json(results, "COCO results")
    if not isinstance(results, list):
        raise ValueError(f"{name}: expected a JSON list of result objects, got {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "keypoints", "score"} <= r.keys():
            raise ValueError(f"{name}: entry {i} is not an object with 'image_id', 'keypoints' and 'score'")
    return results


def evaluate_keypoints(ann_file: str | os.PathLike | COCO, results: str | os.PathLike | list[dict],
                       verbose: bool = False) -> dict[str, float]:
    """``COCOeval(coco_gt, coco_dt, "keypoints")`` stats as ``{"AP": ..., ..., "ARl": ...}`` (plain floats).

    ``results``: a list of COCO keypoint result dicts or the path of such a JSON file (not modified).  With no
    predictions every stat is 0.0 (pycocotools cannot load an empty result set).  pycocotools' prints are
    silenced unless ``verbose``.  Results for images absent from the annotations raise ``ValueError``.
    """
    coco_gt = load_coco_gt(ann_file)
    dets = load_results(results)
    if len(dets) == 0:
        return dict.fromkeys(STAT_NAMES, 0.0)
    unknown = {r["image_id"] for r in dets} - set(coco_gt.getImgIds())
    if unknown:
        src = f" ({results})" if isinstance(results, (str, os.PathLike)) else ""
        raise ValueError(f"results{src} name {len(unknown)} image ids absent from the annotations, e.g. "
                         f"{sorted(unknown, key=str)[:5]}")
    dets = [dict(r) for r in dets]  # loadRes writes id/area/bbox into the dicts
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes(dets)
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.params.useSegm = None
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats, strict=True)}


# ---------------------------------------------------------------------------------------- torchmetrics Metric
def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class COCOKeypointAP(Metric):
    """COCO keypoint AP/AR (pycocotools) over per-instance top-down predictions, DDP-aware.

    ``update(image_ids, keypoints, keypoint_scores, box_scores, areas, instance_ids=None)`` stores
    predictions (image coordinates); states are lists with ``dist_reduce_fx="cat"``, so at ``compute`` every
    rank holds the predictions of all ranks and runs the same evaluation (identical values on every rank).
    Only rank 0 writes ``results_file``.  ``compute`` = optional rescoring (``box * mean kpt score >
    vis_thr``), OKS-NMS per image with ``areas`` (official: crop area ``scale_w*scale_h*200**2``; skipped
    when ``oks_nms_thr >= 1``), ``COCOeval``; returns ``{prefix + name: float64 tensor}`` for ``AP, AP50,
    AP75, APm, APl, AR, AR50, AR75, ARm, ARl`` (all 0 with no predictions).

    ``instance_ids`` (optional, e.g. dataset indices) drops repeated instances at ``compute`` (keeps the
    first): a ``DistributedSampler`` pads the last batches with repeats, which would otherwise count as false
    positives when OKS-NMS is off (with OKS-NMS, identical repeats have OKS 1 and are suppressed anyway).

    ``forward`` only updates (returns ``None``): a per-batch COCO evaluation is meaningless and slow.
    Caveat of torchmetrics list states: every rank must have called ``update`` at least once before a
    distributed ``compute`` (a rank with an empty list would skip the all-gather).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    image_ids: list[torch.Tensor]
    keypoints: list[torch.Tensor]
    keypoint_scores: list[torch.Tensor]
    box_scores: list[torch.Tensor]
    areas: list[torch.Tensor]
    instance_ids: list[torch.Tensor]

    def __init__(self, ann_file: str | os.PathLike, rescore: bool = True, vis_thr: float = 0.2,
                 oks_nms_thr: float = 0.9, results_file: str | os.PathLike | None = None, prefix: str = "",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # read lazily at the first compute (the file may be fetched in prepare_data, after construction)
        self.ann_file = str(ann_file)
        self.rescore = bool(rescore)
        self.vis_thr = float(vis_thr)
        self.oks_nms_thr = float(oks_nms_thr)
        self.results_file = None if results_file is None else str(results_file)
        self.prefix = prefix
        self._coco_gt: COCO | None = None
        for name in ("image_ids", "keypoints", "keypoint_scores", "box_scores", "areas", "instance_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @property
    def coco_gt(self) -> COCO:
        """The ground truth, loaded on first use (``ValueError`` naming the file when malformed)."""
        if self._coco_gt is None:
            self._coco_gt = load_coco_gt(self.ann_file)
        return self._coco_gt

    def forward(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.update(*args, **kwargs)

    def update(self, image_ids: torch.Tensor, keypoints: torch.Tensor, keypoint_scores: torch.Tensor,
               box_scores: torch.Tensor, areas: torch.Tensor,
               instance_ids: torch.Tensor | None = None) -> None:
        image_ids = torch.as_tensor(image_ids, device=self.device).reshape(-1).long()
        n = image_ids.shape[0]
        keypoints = torch.as_tensor(keypoints, device=self.device).float()
        keypoint_scores = torch.as_tensor(keypoint_scores, device=self.device).float()
        box_scores = torch.as_tensor(box_scores, device=self.device).float().reshape(-1)
        areas = torch.as_tensor(areas, device=self.device).float().reshape(-1)
        if instance_ids is None:
            instance_ids = torch.full((n,), -1, dtype=torch.long, device=self.device)
        instance_ids = torch.as_tensor(instance_ids, device=self.device).reshape(-1).long()
        if (keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 2
                or keypoint_scores.shape != keypoints.shape[:2]
                or box_scores.shape[0] != n or areas.shape[0] != n or instance_ids.shape[0] != n):
            raise ValueError(
                f"COCOKeypointAP.update: expected image_ids (N,), keypoints (N,K,2), keypoint_scores (N,K), "
                f"box_scores (N,), areas (N,), instance_ids (N,); got {tuple(image_ids.shape)}, "
                f"{tuple(keypoints.shape)}, {tuple(keypoint_scores.shape)}, {tuple(box_scores.shape)}, "
                f"{tuple(areas.shape)}, {tuple(instance_ids.shape)}")
        self.image_ids.append(image_ids)
        self.keypoints.append(keypoints.detach())
        self.keypoint_scores.append(keypoint_scores.detach())
        self.box_scores.append(box_scores.detach())
        self.areas.append(areas.detach())
        self.instance_ids.append(instance_ids)

    def _state_numpy(self, name: str) -> np.ndarray | None:
        value = getattr(self, name)
        if isinstance(value, list) and len(value) == 0:
            return None
        return dim_zero_cat(value).cpu().numpy()

    def predictions(self) -> list[dict]:
        """Rescored, OKS-NMS'ed predictions in the COCO results format (what ``compute`` evaluates)."""
        image_ids = self._state_numpy("image_ids")
        if image_ids is None or image_ids.shape[0] == 0:
            return []
        kp = self._state_numpy("keypoints").astype(np.float64)
        ks = self._state_numpy("keypoint_scores").astype(np.float64)
        box = self._state_numpy("box_scores").astype(np.float64)
        areas = self._state_numpy("areas").astype(np.float64)
        inst = self._state_numpy("instance_ids")

        # drop repeated instances (DistributedSampler padding), keep the first occurrence
        sel = np.ones(image_ids.shape[0], dtype=bool)
        seen: set[int] = set()
        for i, iid in enumerate(inst.tolist()):
            if iid >= 0:
                if iid in seen:
                    sel[i] = False
                seen.add(iid)
        idx = np.nonzero(sel)[0]
        image_ids, kp, ks, box, areas = image_ids[idx], kp[idx], ks[idx], box[idx], areas[idx]

        scores = rescore(ks, box, self.vis_thr) if self.rescore else box
        keep = np.arange(image_ids.shape[0])
        if self.oks_nms_thr < 1.0:
            if kp.shape[1] != len(COCO_SIGMAS):
                raise ValueError(f"OKS-NMS needs the {len(COCO_SIGMAS)} COCO keypoints, got K={kp.shape[1]}")
            groups: dict[int, list[int]] = {}
            for i, img in enumerate(image_ids.tolist()):
                groups.setdefault(img, []).append(i)
            kept: list[int] = []
            for members in groups.values():
                insts = [{"keypoints": np.concatenate([kp[j], ks[j][:, None]], axis=1), "score": scores[j],
                          "area": areas[j]} for j in members]
                kept.extend(members[j] for j in oks_nms(insts, self.oks_nms_thr))
            keep = np.sort(np.asarray(kept, dtype=np.int64))
        return to_coco_results(image_ids[keep], kp[keep], ks[keep], scores[keep])

    def compute(self) -> dict[str, torch.Tensor]:
        results = self.predictions()
        if self.results_file is not None and _is_rank_zero():
            _write_json_atomic(self.results_file, results)
        stats = evaluate_keypoints(self.coco_gt, results)
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return {f"{self.prefix}{k}": torch.tensor(v, dtype=dtype, device=self.device)
                for k, v in stats.items()}


def _is_rank_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
        or torch.distributed.get_rank() == 0


def _write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

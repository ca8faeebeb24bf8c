"""Official checkpoints -> our key names, with the layout the official model had.

    converted = convert_official(torch.load("hrt_small.pth", weights_only=True), "hrformer_s")
    converted.layout.task, converted.layout.backbone_options   # "cls", {"multiscale_output": True, ...}
    model = build_task_model("hrformer_s", converted.layout.task, **converted.layout.backbone_options)
    model.load_state_dict(converted.state_dict())                # backbone.* + head.*, strict

Reads the files of HRNet (deep-high-resolution-net.pytorch, HRNet-Image-Classification, HRNet-Semantic-Segmentation
plain and OCR), HRFormer (classification, pose, segmentation with OCR), Lite-HRNet and UniFormer (classification,
pose, segmentation).  The generic steps are here:

- unwrap the container: ``{'state_dict': ...}`` (mmcv, openseg, HRNet-Semantic-Segmentation,
  HRNet-Image-Classification's ``checkpoint.pth.tar``, whose ``model`` is a string),
  ``{'model': ...}`` (Swin-style classification), or a plain dict;
- strip the wrappers' prefixes ``module.`` (DataParallel, openseg), ``model.`` (HRNet-Semantic-Segmentation's
  ``FullModel``), ``backbone.`` and ``keypoint_head.`` (mmpose/mmseg);
- drop what is not a model weight (``loss.*``: the class weights of HRNet-Semantic-Segmentation's criterion) and
  derived buffers (``relative_position_index``: ours are rebuilt from the window size);
- split backbone and head keys and rename them with the family's :class:`CheckpointRules` (``hrnet.py``,
  ``hrformer.py``, ``litehrnet.py``, ``uniformer.py`` register theirs with the backbone registry);
- ask the family's rules for the :class:`Layout`: the code base and task the file comes from and the ``build_backbone``
  / head options under which our model computes what the official one did (fusion upsampling, align_corners,
  single- or multi-scale output, relative position bias, output norms, window size, ...).

A file in which no backbone key of the family is found raises ``ValueError`` naming the key prefixes it has.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .registry import backbone_family, family_rules

_CONTAINER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "model.", "backbone.", "keypoint_head.")
_NOT_WEIGHTS = ("loss.",)  # HRNet-Semantic-Segmentation saves FullModel(model, loss): loss.criterion.weight
_DERIVED = ("relative_position_index",)

Rule = tuple[re.Pattern, object]


def rename(key: str, rules: list[Rule]) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


@dataclass(frozen=True)
class Layout:
    """Where an official checkpoint comes from and how our model must be built to compute the same function.

    ``code_base``: the official repository (and flavour); ``task``: "cls", "pose", "seg" or None (backbone only);
    ``backbone_options``: ``build_backbone`` options; ``head``: the head kind (``task_models.head_kind`` names, None
    without head); ``head_options``: options of that head (e.g. ``align_corners``).
    """

    code_base: str
    task: str | None
    backbone_options: dict = field(default_factory=dict)
    head: str | None = None
    head_options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class CheckpointRules:
    """A family's official key names: which keys are the backbone's, how they are renamed, what layout they show.

    Subclasses set ``backbone_roots`` (key starts, after the container prefixes are stripped, that belong to the
    backbone), ``backbone_rules`` / ``head_rules`` (regex renames) and implement :meth:`layout`.
    """

    backbone_roots: tuple[str, ...] = ()
    backbone_rules: list[Rule] = []
    head_rules: list[Rule] = []

    def is_backbone(self, key: str) -> bool:
        return key.startswith(self.backbone_roots)

    def layout(self, backbone: dict, head: dict, hints: dict) -> Layout:
        raise NotImplementedError

    def adapt(self, backbone: dict, layout: Layout, hints: dict) -> dict:
        """Change tensors for the requested options (e.g. resize bias tables to another window); default: none."""
        return backbone

    def absent_from(self, backbone_options: dict) -> tuple[str, ...]:
        """Key prefixes of our backbone that a checkpoint of this layout cannot have (a model that has them starts
        them fresh, as the official code does); default: none."""
        return ()


@dataclass
class ConvertedCheckpoint:
    """An official checkpoint in our names: ``backbone`` and ``head`` state dicts, the detected ``layout``, and the
    official keys that were ``dropped`` (not weights, or derived buffers)."""

    arch: str
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    layout: Layout
    dropped: list[str]

    def state_dict(self, with_head: bool = True) -> dict[str, torch.Tensor]:
        """``backbone.*`` (+ ``head.*``) keys, as the training module and ``TaskModel`` name them."""
        out = {f"backbone.{k}": v for k, v in self.backbone.items()}
        if with_head:
            out.update({f"head.{k}": v for k, v in self.head.items()})
        return out


def unwrap_checkpoint(obj: Mapping) -> dict[str, torch.Tensor]:
    """Return the flat ``{key: tensor}`` state dict inside a checkpoint container."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict or checkpoint dict, got {type(obj).__name__}")
    for key in _CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise ValueError(f"no state dict found in checkpoint (top-level keys: {sorted(map(str, obj))[:10]})")


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def key_prefixes(keys, depth: int = 1) -> str:
    """``'conv1 (1), layer1 (40), ...'``: the first ``depth`` dotted parts of ``keys`` with their counts."""
    counts = Counter(".".join(k.split(".")[:depth]) for k in keys)
    return ", ".join(f"{p} ({n})" for p, n in sorted(counts.items()))


def convert_official(checkpoint: Mapping, arch: str, *, window_size: int | None = None,
                     align_corners: bool | None = None) -> ConvertedCheckpoint:
    """Convert an official checkpoint (any container, official key names) for backbone ``arch``.

    ``window_size`` (HRFormer): resize the relative position bias tables to this window (the official segmentation
    fine-tuning does so for windows 13 and 15).  ``align_corners`` (HRNet segmentation): override the detected
    interpolation (plain HRNetV2 files: False, HRNet-OCR files: True; the HRNet-OCR branch's plain model with its
    default config: True).
    """
    rules = family_rules(backbone_family(arch))
    state = unwrap_checkpoint(checkpoint)
    backbone, head, dropped = {}, {}, []
    for key, value in state.items():
        short = strip_prefixes(key)
        if short.startswith(_NOT_WEIGHTS) or short.endswith(_DERIVED):
            dropped.append(key)
        elif rules.is_backbone(short):
            backbone[rename(short, rules.backbone_rules)] = value
        else:
            head[rename(short, rules.head_rules)] = value
    if not backbone:
        raise ValueError(f"no {arch} backbone keys found (a {backbone_family(arch)} backbone has keys starting with "
                         f"{', '.join(r.rstrip('.') for r in rules.backbone_roots)}); the file's key prefixes: "
                         f"{key_prefixes(state) or 'none'}")
    hints = {"window_size": window_size, "align_corners": align_corners}
    layout = rules.layout(backbone, head, hints)
    backbone = rules.adapt(backbone, layout, hints)
    return ConvertedCheckpoint(arch, backbone, head, layout, dropped)


def split_official_state_dict(state_dict: Mapping, arch: str, window_size: int | None = None) -> tuple[dict, dict]:
    """``(backbone, head)`` state dicts of :func:`convert_official`."""
    converted = convert_official(state_dict, arch, window_size=window_size)
    return converted.backbone, converted.head


def convert_official_state_dict(state_dict: Mapping, arch: str, window_size: int | None = None) -> dict:
    """The backbone state dict of :func:`convert_official` (loads into ``build_backbone(arch, **layout options)``)."""
    return convert_official(state_dict, arch, window_size=window_size).backbone


def fuse_rows_of_last_module(backbone: Mapping, stages: str = "stages") -> int:
    """Number of output rows the last module of the last stage fuses (1: single-output pose layout)."""
    fuse = [k.split(".") for k in backbone if k.startswith(f"{stages}.") and ".fuse_layers." in k]
    if not fuse:
        return 0
    last = max((int(p[1]), int(p[2])) for p in fuse)
    return len({int(p[4]) for p in fuse if (int(p[1]), int(p[2])) == last})


def resize_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Bilinearly resize a ((2K-1)^2, heads) relative position bias table to another window size."""
    side = math.isqrt(table.shape[0])
    new_side = 2 * window_size - 1
    if side == new_side:
        return table
    grid = table.T.reshape(1, -1, side, side).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bilinear", align_corners=False)
    return grid.reshape(-1, new_side * new_side).T.contiguous().to(table.dtype)

"""Official checkpoints -> our key names.

Handles the checkpoints of HRNet (deep-high-resolution-net.pytorch, HRNet-Image-Classification,
HRNet-Semantic-Segmentation), HRFormer (cls, pose and seg code bases, and mmpose re-releases), Lite-HRNet
(HRNet/Lite-HRNet, mmpose) and UniFormer (Sense-X/UniFormer image classification, pose and segmentation):

- unwraps ``{'model': ...}`` (cls), ``{'state_dict': ...}`` (mmcv/openseg) containers;
- strips ``module.`` (DataParallel/openseg) and ``backbone.`` (mmpose/openseg) prefixes;
- renames the scaffold (``conv1`` -> ``stem.conv1``, ``layer1`` -> ``stage1``, ``transitionN`` ->
  ``transitions.{N-1}``, ``stageN`` -> ``stages.{N-2}``) and the HRFormer block internals
  (``attn.attn.*`` -> ``attn.*``, ``mlp.{fc1,norm1,dw3x3,norm2,fc2,norm3}`` -> ``ffn.{fc1,bn1,dwconv,bn2,fc2,bn3}``);
- drops the derived ``relative_position_index`` buffers (ours are rebuilt from the window size) and,
  when a different ``window_size`` is asked for, resizes the bias tables bilinearly as the official
  segmentation fine-tuning does;
- Lite-HRNet: ``transitionN`` -> ``transitions.N``, ``stageN`` -> ``stages.N`` (0-based in both), a module's
  ``layers`` -> ``blocks`` (conditional channel weighting blocks) or ``branches`` (the naive model's per-branch
  shuffle units); the stem, the blocks' insides and ``head_layer`` (iterative head) keep their names;
- UniFormer: backbone names are kept (``patch_embed*``, ``blocks*``, the downstream models' ``norm1..4``);
- separates head keys (``final_layer``, ``keypoint_head.*``, ``incre_modules``, ``last_layer``, UniFormer's
  ``norm``/``head`` (classification), ``deconv_layers`` (pose), ``neck``/``decode_head`` (Semantic FPN), ...),
  which our heads name exactly as the official ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .registry import backbone_family

_CONTAINER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "backbone.", "keypoint_head.")
_HR_ROOTS = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage")
# Keys starting with one of these (after the prefixes are stripped) belong to the backbone; the rest to heads.
_BACKBONE_ROOTS = {
    "hrnet": _HR_ROOTS,
    "hrformer": _HR_ROOTS,
    "litehrnet": ("stem.", "transition", "stage", "head_layer."),
    "uniformer": ("patch_embed", "blocks", "norm1.", "norm2.", "norm3.", "norm4."),
}

_SCAFFOLD_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^(conv1|bn1|conv2|bn2)\."), r"stem.\1."),
    (re.compile(r"^layer1\."), "stage1."),
    (re.compile(r"^transition(\d)\."), lambda m: f"transitions.{int(m[1]) - 1}."),
    (re.compile(r"^stage([2-9])\."), lambda m: f"stages.{int(m[1]) - 2}."),
]
_HRFORMER_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"\.attn\.attn\."), ".attn."),
    (re.compile(r"\.mlp\.fc1\."), ".ffn.fc1."),
    (re.compile(r"\.mlp\.norm1\."), ".ffn.bn1."),
    (re.compile(r"\.mlp\.dw3x3\."), ".ffn.dwconv."),
    (re.compile(r"\.mlp\.norm2\."), ".ffn.bn2."),
    (re.compile(r"\.mlp\.fc2\."), ".ffn.fc2."),
    (re.compile(r"\.mlp\.norm3\."), ".ffn.bn3."),
]
_LITEHRNET_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^transition(\d)\."), r"transitions.\1."),
    (re.compile(r"^stage(\d)\."), r"stages.\1."),
    (re.compile(r"\.layers\.(\d+\.\d+\.branch2)\."), r".branches.\1."),  # naive: layers.<branch>.<unit>
    (re.compile(r"\.layers\."), ".blocks."),  # lite: layers.<block>
]
_RULES = {"hrnet": _SCAFFOLD_RULES, "hrformer": _SCAFFOLD_RULES + _HRFORMER_RULES, "litehrnet": _LITEHRNET_RULES,
          "uniformer": []}


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
    raise ValueError(f"no state dict found in checkpoint (top-level keys: {sorted(obj)[:10]})")


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def split_official_state_dict(state_dict: Mapping, arch: str,
                              window_size: int | None = None) -> tuple[dict, dict]:
    """Convert an official checkpoint of ``arch``; returns ``(backbone_state_dict, head_state_dict)``.

    Head keys keep their official names (our heads use them) with container prefixes removed.
    """
    family = backbone_family(arch)
    rules, roots = _RULES[family], _BACKBONE_ROOTS[family]
    backbone, head = {}, {}
    for key, value in unwrap_checkpoint(state_dict).items():
        key = _strip_prefixes(key)
        if not key.startswith(roots):
            head[key] = value
            continue
        if key.endswith("relative_position_index"):
            continue
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        if window_size is not None and key.endswith("relative_position_bias_table"):
            value = resize_bias_table(value, window_size)
        backbone[key] = value
    if not backbone:
        raise ValueError(f"no {arch} backbone keys found; first keys: {list(state_dict)[:5]}")
    return backbone, head


def convert_official_state_dict(state_dict: Mapping, arch: str, window_size: int | None = None) -> dict:
    """Official checkpoint (HRNet/HRFormer/Lite-HRNet/UniFormer naming, any container or prefix) -> state dict
    that ``build_backbone(arch, ...)`` loads with ``strict=True`` (given the matching layout options:
    ``multiscale_output`` for HRNet/HRFormer, ``output_norms=False`` for UniFormer classification checkpoints)."""
    return split_official_state_dict(state_dict, arch, window_size)[0]


def resize_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Bilinearly resize a ((2K-1)^2, heads) relative position bias table to another window size."""
    side = math.isqrt(table.shape[0])
    new_side = 2 * window_size - 1
    if side == new_side:
        return table
    grid = table.T.reshape(1, -1, side, side).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bilinear", align_corners=False)
    return grid.reshape(-1, new_side * new_side).T.contiguous().to(table.dtype)

"""A backbone with the head of its published task model: classification, pose or segmentation.

    from hrformer.models.task_models import build_task_model
    model = build_task_model("hrformer_t", "pose")     # model.head_kind == "heatmap-1x1"
    heatmaps = model(torch.randn(2, 3, 256, 192))        # (2, 17, 64, 48)

- cls: all four branches + ``HRClassificationHead`` (depth-wise variant for HRFormer), 1000 classes.
- pose: ``multiscale_output=False`` + 1x1 ``HeatmapHead`` on branch 0, 17 joints; HRFormer also
  ``fuse_upsample="bilinear"`` and ``rpe=False`` as the official pose code.
- seg: all four branches, 19 classes; HRFormer + ``OCRHead`` (returns ``{"out", "aux"}``), HRNet +
  ``UpsampleConcatHead`` (HRNetV2) with ``fuse_upsample="bilinear_resize"`` and ``align_corners=False`` as the
  released HRNetV2 checkpoints (``head="hrnet-ocr"``: HRNet-OCR's head).
- :func:`build_from_layout`: the model an official checkpoint needs (``convert.Layout``).
- Lite-HRNet (pose only, as published): the official backbone (its iterative head's 1/4 map) + the 1x1 head.
- UniFormer: cls ``output_norms=False`` + ``UniFormerClsHead`` (BN, pool, linear); pose the stage-4 map
  (``multiscale_output=False``) + ``DeconvHeatmapHead`` (three deconvolutions + 1x1); seg the four normalised
  stage maps + ``SemanticFPNHead``.
"""

from __future__ import annotations

import torch
from torch import nn

from .convert import Layout
from .heads import (
    DeconvHeatmapHead,
    HeatmapHead,
    HRClassificationHead,
    HRNetOCRHead,
    OCRHead,
    SemanticFPNHead,
    UniFormerClsHead,
    UpsampleConcatHead,
)
from .registry import backbone_family, build_backbone

TASKS = ("cls", "pose", "seg")
NUM_CLASSES = {"cls": 1000, "pose": 17, "seg": 19}
# Tasks each family has a published model (backbone + head) for; other families do all three.
FAMILY_TASKS = {"litehrnet": ("pose",)}


class TaskModel(nn.Module):
    """backbone -> head: image (B, 3, H, W) -> head output; ``head_kind`` names the head for reports."""

    def __init__(self, backbone: nn.Module, head: nn.Module, head_kind: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_kind = head_kind

    def forward(self, x: torch.Tensor):
        return self.head(self.backbone(x))


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def supported_tasks(name: str) -> tuple[str, ...]:
    """The tasks :func:`build_task_model` builds for backbone ``name``."""
    return FAMILY_TASKS.get(backbone_family(name), TASKS)


def _check(name: str, task: str) -> str:
    _check_task(task)
    family = backbone_family(name)
    if task not in supported_tasks(name):
        raise ValueError(f"{name} has no published {task} model; its tasks: {', '.join(supported_tasks(name))}")
    return family


def backbone_options(name: str, task: str) -> dict:
    """``build_backbone`` options giving the official configuration of backbone ``name`` for ``task``."""
    family = _check(name, task)
    if family == "litehrnet":
        return {}
    if family == "uniformer":
        return {"cls": {"output_norms": False, "multiscale_output": False},
                "pose": {"multiscale_output": False}, "seg": {"multiscale_output": True}}[task]
    if task == "pose":
        opts: dict = {"multiscale_output": False}
        if family == "hrformer":
            opts.update(fuse_upsample="bilinear", rpe=False)
        return opts
    if task == "seg" and family == "hrnet":
        return {"fuse_upsample": "bilinear_resize"}
    return {}


def head_kind(name: str, task: str) -> str:
    """The ``head_kind`` :func:`build_task_model` gives ``name`` for ``task``, without building anything."""
    family = _check(name, task)
    if family == "uniformer":
        return {"cls": "uniformer-cls", "pose": "deconv-heatmap", "seg": "semantic-fpn"}[task]
    if task == "pose":
        return "heatmap-1x1"
    if task == "cls":
        return "hr-cls"
    return "ocr" if family == "hrformer" else "upsample-concat"


# head kind -> builder(backbone, num_classes, **head options)
HEADS = {
    "heatmap-1x1": lambda b, n, **o: HeatmapHead(b.out_channels[0], num_joints=n, **o),
    "hr-cls": lambda b, n, **o: HRClassificationHead(b.out_channels, n, depthwise=backbone_family(b.arch) == "hrformer",
                                                     **o),
    "ocr": lambda b, n, **o: OCRHead(in_channels=b.out_channels, num_classes=n, **o),
    "hrnet-ocr": lambda b, n, **o: HRNetOCRHead(b.out_channels, n, **o),
    "uniformer-cls": lambda b, n, **o: UniFormerClsHead(b.out_channels, n, **o),
    "deconv-heatmap": lambda b, n, **o: DeconvHeatmapHead(b.out_channels, num_joints=n, **o),
    "semantic-fpn": lambda b, n, **o: SemanticFPNHead(b.out_channels, n, strides=b.strides, **o),
    "upsample-concat": lambda b, n, **o: UpsampleConcatHead(b.out_channels, n, **{"align_corners": False, **o}),
}


def build_task_model(name: str, task: str, num_classes: int | None = None, head: str | None = None,
                     head_options: dict | None = None, **backbone_overrides) -> TaskModel:
    """Backbone ``name`` with the head of the published ``task`` model ("cls", "pose" or "seg").

    ``num_classes`` defaults to ``NUM_CLASSES[task]``; ``head`` (a key of ``HEADS``) replaces the published head
    kind and ``head_options`` go to the head.  ``backbone_overrides`` (e.g. ``attn_impl``) update
    :func:`backbone_options` and go to ``build_backbone``, which raises ``TypeError`` for an option the
    backbone does not have.
    """
    backbone = build_backbone(name, **{**backbone_options(name, task), **backbone_overrides})
    kind = head or head_kind(name, task)
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEADS)}")
    return TaskModel(backbone, HEADS[kind](backbone, num_classes or NUM_CLASSES[task], **(head_options or {})), kind)


def build_from_layout(name: str, layout: Layout, num_classes: int | None = None, **overrides) -> TaskModel:
    """The model whose function an official checkpoint of ``layout`` (``convert_official(...).layout``) computes."""
    if layout.task is None:
        raise ValueError(f"{layout.code_base}: a backbone without a head; build it with build_backbone({name!r}, "
                         f"**{layout.backbone_options})")
    return build_task_model(name, layout.task, num_classes, head=layout.head, head_options=layout.head_options,
                            **{**layout.backbone_options, **overrides})

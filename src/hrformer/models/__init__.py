"""Backbones, heads and checkpoint conversion.

    from hrformer.models import build_backbone
    net = build_backbone("hrformer_s", rpe=True, fuse_upsample="nearest")
    feats = net(torch.randn(2, 3, 256, 192))   # list of 4 maps, strides net.strides
"""

from . import hrformer as _hrformer  # noqa: F401  (registers the variants)
from . import hrnet as _hrnet  # noqa: F401
from . import litehrnet as _litehrnet  # noqa: F401
from . import uniformer as _uniformer  # noqa: F401
from .convert import (
    ConvertedCheckpoint,
    Layout,
    convert_official,
    convert_official_state_dict,
    split_official_state_dict,
)
from .heads import (
    DeconvHeatmapHead,
    HeatmapHead,
    HRClassificationHead,
    HRNetOCRHead,
    SemanticFPNHead,
    UniFormerClsHead,
    UpsampleConcatHead,
)
from .registry import backbone_family, build_backbone, list_backbones

__all__ = [
    "ConvertedCheckpoint",
    "DeconvHeatmapHead",
    "HRClassificationHead",
    "HRNetOCRHead",
    "HeatmapHead",
    "Layout",
    "SemanticFPNHead",
    "UniFormerClsHead",
    "UpsampleConcatHead",
    "backbone_family",
    "build_backbone",
    "convert_official",
    "convert_official_state_dict",
    "list_backbones",
    "split_official_state_dict",
]

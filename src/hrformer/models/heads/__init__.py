"""Task heads: each maps the backbone's list of branch features to the task's output."""

from .classification import HRClassificationHead, UniFormerClsHead, classification_head
from .heatmap import DeconvHeatmapHead, HeatmapHead
from .segmentation import HRNetOCRHead, OCRHead, SemanticFPNHead, UpsampleConcatHead

__all__ = ["DeconvHeatmapHead", "HRClassificationHead", "HRNetOCRHead", "HeatmapHead", "OCRHead", "SemanticFPNHead",
           "UniFormerClsHead", "UpsampleConcatHead", "classification_head"]

"""Task heads: each maps the backbone's list of branch features to the task's output."""

from .classification import HRClassificationHead
from .heatmap import HeatmapHead
from .segmentation import OCRHead, UpsampleConcatHead

__all__ = ["HRClassificationHead", "HeatmapHead", "OCRHead", "UpsampleConcatHead"]

"""Evaluation: COCO keypoint AP (pycocotools), segmentation confusion-matrix metrics."""

"""Generators that write small synthetic datasets in the real formats (COCO, Cityscapes, ImageFolder)."""

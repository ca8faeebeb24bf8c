"""Datasets, datamodules, transforms and synthetic data generators."""

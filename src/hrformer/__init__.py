"""hrformer: Lightning + Hydra experiments for the high-resolution family of vision backbones."""

__version__ = "0.1.0"

"""hrformer: Lightning + Hydra experiments for the high-resolution family of vision backbones."""

from .utils import resolvers as _resolvers  # noqa: F401  (registers the resolvers the configs use)

__version__ = "0.1.0"

"""The table of named backbones: ``build_backbone(name, **options)``.

Each family module registers its variants at import time with ``@register_backbone``-style calls;
``hrformer.models`` imports the families so the table is complete once the package is imported.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES: dict[str, str] = {}


def register_backbone(name: str, builder: Callable[..., nn.Module], family: str) -> None:
    if name in _BACKBONES:
        raise KeyError(f"backbone {name!r} is registered twice")
    _BACKBONES[name] = builder
    _FAMILIES[name] = family


def list_backbones(family: str | None = None) -> list[str]:
    """Registered backbone names, optionally only those of one family (``"hrnet"``, ``"hrformer"``)."""
    return sorted(n for n in _BACKBONES if family is None or _FAMILIES[n] == family)


def backbone_family(name: str) -> str:
    _check(name)
    return _FAMILIES[name]


def build_backbone(name: str, **options) -> nn.Module:
    """Build the backbone registered as ``name``; ``options`` go to the family's constructor.

    Raises ``KeyError`` naming the known backbones when ``name`` is unknown, and ``TypeError`` naming
    the option when an option does not exist for that family.
    """
    _check(name)
    return _BACKBONES[name](**options)


def _check(name: str) -> None:
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}")

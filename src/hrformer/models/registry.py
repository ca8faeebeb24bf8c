"""The table of named backbones: ``build_backbone(name, **options)``.

Each family module registers its variants at import time with ``register_backbone`` calls, and the rules that read
its official checkpoints with ``register_family_rules`` (``convert.CheckpointRules``); ``hrformer.models`` imports
the families so the tables are complete once the package is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES: dict[str, str] = {}
_RULES: dict[str, object] = {}


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


def register_family_rules(family: str, rules: object) -> None:
    """The ``convert.CheckpointRules`` that read the official checkpoints of ``family``."""
    _RULES[family] = rules


def family_rules(family: str):
    if family not in _RULES:
        raise KeyError(f"no checkpoint rules for family {family!r}; families with rules: {', '.join(sorted(_RULES))}")
    return _RULES[family]


def build_backbone(name: str, **options) -> nn.Module:
    """Build the backbone registered as ``name``; ``options`` go to the family's constructor.

    The backbone gets ``arch`` (``name``) and ``options`` (every constructor option with its value, defaults
    included), which checkpoint loading uses.  Raises ``KeyError`` naming the known backbones when ``name`` is
    unknown, and ``TypeError`` naming the option when an option does not exist for that family.
    """
    _check(name)
    builder = _BACKBONES[name]
    net = builder(**options)
    params = inspect.signature(builder).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    net.arch = name
    net.options = {**defaults, **options}
    return net


def _check(name: str) -> None:
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}")

"""Shared fixtures: the read-only ``../shared`` folder beside the checkout (reference outputs, tiny data)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path((REPO_ROOT / ".." / "shared").resolve())


def load_script(name: str):
    """``scripts/NAME.py`` imported as a module (to call its functions in-process; a subprocess costs seconds of
    torch imports).  Registered in ``sys.modules`` as ``NAME_script`` (dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests expect the read-only 'shared' folder beside the "
                                "checkout (../shared) with reference/ and data/")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def load_reference(shared_dir):
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(_require(shared_dir / "reference" / name), weights_only=True)
        return cache[name]

    return load


def as_float32(state_dict: dict) -> dict:
    """Reference weights are stored as fp16 values; run in fp32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| relative to the reference's scale."""
    return ((out - ref).abs().max() / ref.abs().max()).item()

"""Deterministic weights and inputs: the same tensors from a key's name and shape, on any machine.

The equivalence references (``scripts/official_references.py``, ``tests/reference/``) and the checkpoint tests fill
official state dicts with these tensors instead of storing weights: a reference file keeps only the official key
names and shapes, the input's seed and the official outputs.

    sd = deterministic_state_dict({"conv1.weight": ((64, 3, 3, 3), torch.float32), ...})
    x = deterministic_input(0, (2, 3, 64, 64))

Each floating tensor is drawn from numpy's PCG64 generator seeded by a SHA-256 hash of ``"{seed}:{key}"`` (uniform
draws only, whose stream numpy keeps stable), scaled by what the key names:

- ``running_var`` and 1-D ``*.weight`` (BatchNorm / LayerNorm scales): U(0.5, 1.5), positive and away from 0, so
  that a missing or misplaced normalisation shows;
- ``running_mean`` and ``*.bias``: U(-0.2, 0.2);
- ``relative_position_bias_table``: U(-1, 1), large enough that a wrong bias index shows;
- other tensors of 2 or more dimensions (conv, linear and deconv weights): U(-a, a) with ``a = sqrt(3 / fan_in)``,
  ``fan_in = numel / shape[0]`` (unit variance gain, so that deep stacks neither vanish nor explode in fp32).

Integer tensors (``num_batches_tracked``, ``relative_position_index``) are zeros; code that needs an integer buffer
keeps its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

Spec = Mapping[str, tuple[Sequence[int], torch.dtype]]


def key_seed(key: str, seed: int = 0) -> int:
    """64-bit seed of ``key``: the first 8 bytes of SHA-256(``"{seed}:{key}"``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def _uniform(seed: int, shape: Sequence[int], low: float, high: float) -> torch.Tensor:
    n = math.prod(shape)
    values = np.random.Generator(np.random.PCG64(seed)).random(n, dtype=np.float32)
    return torch.from_numpy(values * np.float32(high - low) + np.float32(low)).reshape(tuple(shape))


def value_range(key: str, shape: Sequence[int]) -> tuple[float, float]:
    """The (low, high) of the uniform distribution that ``key`` of ``shape`` is drawn from."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
        return 0.5, 1.5
    if leaf in ("running_mean", "bias"):
        return -0.2, 0.2
    if leaf == "relative_position_bias_table":
        return -1.0, 1.0
    if len(shape) >= 2:
        a = math.sqrt(3.0 / max(1, math.prod(shape) // shape[0]))
        return -a, a
    return -0.2, 0.2


def deterministic_tensor(key: str, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                         seed: int = 0) -> torch.Tensor:
    """The tensor of ``key`` (see the module docstring); zeros for integer dtypes."""
    if not dtype.is_floating_point:
        return torch.zeros(tuple(shape), dtype=dtype)
    low, high = value_range(key, shape)
    return _uniform(key_seed(key, seed), shape, low, high).to(dtype)


def deterministic_state_dict(spec: Spec | Mapping[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """``{key: deterministic_tensor(key, shape, dtype)}`` for ``{key: (shape, dtype)}`` or a state dict's keys."""
    out = {}
    for key, item in spec.items():
        shape, dtype = (item.shape, item.dtype) if isinstance(item, torch.Tensor) else item
        out[key] = deterministic_tensor(key, shape, dtype, seed)
    return out


def state_dict_spec(state_dict: Mapping[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], str]]:
    """``[(key, shape, dtype name)]`` of a state dict, the form reference files store (see :func:`spec_from_list`)."""
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()]


def spec_from_list(items: Sequence[tuple[str, Sequence[int], str]]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The inverse of :func:`state_dict_spec`."""
    return {k: (tuple(shape), getattr(torch, dtype)) for k, shape, dtype in items}


def deterministic_input(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """A float32 image batch U(-2, 2) (about the range of ImageNet-normalised pixels) from ``seed``."""
    return _uniform(key_seed("input", seed), shape, -2.0, 2.0)

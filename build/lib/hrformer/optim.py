"""Learning-rate schedules as step-wise multipliers (LambdaLR), parameterised by fractions of training.

Each factory takes the optimizer and the total number of optimizer steps (the module passes
``trainer.estimated_stepping_batches``), so one config serves any number of epochs: the official pose
recipe "decay x0.1 at epochs 170 and 200 of 210" is ``milestones: [0.8095, 0.9524]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int, warmup_ratio: float) -> float:
    if step >= warmup_steps or warmup_steps <= 0:
        return 1.0
    return warmup_ratio + (1.0 - warmup_ratio) * step / warmup_steps


def warmup_multistep(optimizer: Optimizer, total_steps: int, warmup_steps: int = 500, warmup_ratio: float = 1e-3,
                     milestones: Sequence[float] = (170 / 210, 200 / 210), gamma: float = 0.1) -> LambdaLR:
    """Linear warm-up, then multiply by ``gamma`` at each milestone (fraction of ``total_steps``)."""
    bounds = [int(m * total_steps) for m in milestones]

    def factor(step: int) -> float:
        return _warmup(step, warmup_steps, warmup_ratio) * gamma ** sum(step >= b for b in bounds)

    return LambdaLR(optimizer, factor)


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 1e-3,
                  min_ratio: float = 0.01, warmup_fraction: float = 0.0) -> LambdaLR:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the base LR.

    The warm-up lasts ``max(warmup_steps, round(warmup_fraction * total_steps))`` steps (the official
    classification recipe: 20 of 300 epochs, ``warmup_fraction: 0.0667``).
    """
    warmup_steps = max(int(warmup_steps), round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps, warmup_ratio)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, factor)


def warmup_poly(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 1e-3,
                power: float = 0.9) -> LambdaLR:
    """Linear warm-up, then polynomial decay ``(1 - t) ** power`` (segmentation recipes)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps, warmup_ratio)
        return (1 - min(1.0, step / max(1, total_steps))) ** power

    return LambdaLR(optimizer, factor)

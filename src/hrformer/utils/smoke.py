"""Whether a training run is a smoke test rather than its recipe: ``debug=*``, ``trainer.fast_dev_run``,
``trainer.limit_*_batches``, or a training budget (``trainer.max_epochs`` / ``max_steps`` / ``max_time``) cut below
the recipe's on the command line.  Its results-store record is marked with the reason (``"smoke"``), and
``scripts/tables.py`` leaves such records out of the paper tables."""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

BUDGET_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")
LIMIT_KEYS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")


def budget(key: str, value) -> float:
    """A training budget as a number (unlimited: inf); ``max_time`` ``"DD:HH:MM:SS"`` or a dict in seconds."""
    if value is None or (key != "trainer.max_time" and int(value) < 0):
        return math.inf
    if key != "trainer.max_time":
        return float(value)
    if isinstance(value, str):
        days, hours, minutes, seconds = (int(v) for v in value.split(":"))
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    value = OmegaConf.to_container(value) if not isinstance(value, dict) else value
    units = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
    return float(sum(units[k] * v for k, v in value.items()))


def smoke_reason(cfg: DictConfig) -> str | None:
    """Why this run is a smoke test (see the module docstring), or None for a run of its recipe."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        hydra_cfg = None
    if hydra_cfg is not None and hydra_cfg.runtime.choices.get("debug"):
        return f"debug={hydra_cfg.runtime.choices.get('debug')}"
    trainer = cfg.get("trainer") or {}
    if trainer.get("fast_dev_run"):
        return f"trainer.fast_dev_run={trainer.get('fast_dev_run')}"
    for key in LIMIT_KEYS:
        if trainer.get(key) is not None and float(trainer.get(key)) != 1.0:
            return f"trainer.{key}={trainer.get(key)}"
    return None if hydra_cfg is None else _shorter_budget(cfg, list(hydra_cfg.overrides.task))


def _shorter_budget(cfg: DictConfig, overrides: list[str]) -> str | None:
    """``key=value`` of a budget override below the recipe's (the config composed without the budget overrides)."""
    cut = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in BUDGET_KEYS]
    if not cut:
        return None
    try:
        from hydra import compose

        recipe = compose("train", overrides=[o for o in overrides if o not in cut])
    except Exception as err:  # noqa: BLE001 - a recipe that cannot be composed alone: judge by the override
        log.warning("cannot compose the recipe without %s (%s): the run counts as a smoke test", cut, err)
        return ", ".join(cut)
    for override in cut:
        key = override.split("=", 1)[0].lstrip("+~")
        ours, theirs = OmegaConf.select(cfg, key), OmegaConf.select(recipe, key)
        if budget(key, ours) < budget(key, theirs):
            return f"{key}={ours} (the recipe's: {theirs})"
    return None

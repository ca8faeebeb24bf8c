"""Helpers shared by the Hydra entry points: instantiation, run-directory outputs, W&B hygiene."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig):
    """backbone + head + task + optimizer/scheduler -> HRLitModule (see conf/train.yaml)."""
    from ..module import HRLitModule

    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return HRLitModule(backbone=instantiate(cfg.backbone), head=instantiate(cfg.task.head),
                       task=instantiate(cfg.task.task), optimizer=instantiate(cfg.optimizer), scheduler=scheduler,
                       **cfg.get("module", {}))


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_loggers(cfg: DictConfig) -> list:
    """Loggers from ``cfg.logger`` (a dict of named logger configs); W&B goes offline without credentials."""
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        if "Wandb" in lg_cfg._target_ and not lg_cfg.get("offline") and not wandb_has_credentials():
            log.warning("no W&B credentials: logging offline to %s (upload later with `wandb sync`)",
                        lg_cfg.get("save_dir"))
            lg_cfg = OmegaConf.merge(lg_cfg, {"offline": True, "log_model": False})
        loggers.append(instantiate(lg_cfg))
        log.info("logger %s: %s", name, lg_cfg._target_)
    return loggers


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]


def finite_metrics(metrics: dict[str, Any], prefix: str = "val/") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefix):
            v = float(value)
            out[key] = v if math.isfinite(v) else None
    return dict(sorted(out.items()))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def finish_wandb() -> None:
    """Close the W&B run so that multirun jobs do not leak into each other."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()

"""Helpers shared by the Hydra entry points and scripts: instantiation, loading a trained run, run-directory outputs,
the results store (W&B: :mod:`hrformer.utils.wandb`)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from .wandb import has_credentials

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig):
    """backbone + head + task + optimizer/scheduler -> HRLitModule (see conf/train.yaml)."""
    from ..module import HRLitModule

    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return HRLitModule(backbone=instantiate(cfg.backbone), head=instantiate(cfg.task.head),
                       task=instantiate(cfg.task.task), optimizer=instantiate(cfg.optimizer), scheduler=scheduler,
                       **cfg.get("module", {}))


def find_train_config(ckpt_path: Path, explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [ckpt_path.parent.parent / "config.yaml",
                                                    ckpt_path.parent / "config.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no training config.yaml found for {ckpt_path} (looked at "
                            f"{', '.join(map(str, candidates))}); pass train_config=PATH")


def unresolved_train_config(config_path: Path) -> DictConfig:
    """The training run's configuration with its interpolations kept, so that an override reaches every key that
    refers to it (``task.codec.sigma=3`` also changes the codec the datamodule and the task were given).

    Hydra's own copy beside ``config.yaml`` (``.hydra/config.yaml``) has them; its ``paths`` (which refer to the
    training process's Hydra runtime) are replaced by the resolved ones of ``config.yaml``.  Without that copy (a
    ``train_config=`` file, ``hydra.output_subdir=null``) the resolved ``config.yaml`` is used as it is.
    """
    resolved = OmegaConf.load(config_path)
    hydra_copy = config_path.parent / ".hydra" / "config.yaml"
    if not hydra_copy.is_file() or resolved.get("paths") is None:
        return resolved
    unresolved = OmegaConf.load(hydra_copy)
    with open_dict(unresolved):
        unresolved.paths = resolved.paths
    return unresolved


def load_trained_module(ckpt_path: str | Path, overrides: Mapping[str, Any] | None = None, device: str = "cpu"):
    """(module in eval mode on ``device`` with the checkpoint's weights, the training run's config), for inference.

    The module is rebuilt from the training run's configuration beside the checkpoint (:func:`find_train_config`,
    :func:`unresolved_train_config`) without initial weights or compilation, after setting ``overrides`` (dotted
    key -> value, e.g. ``{"task.task.results_file": None}``) in the config.  The checkpoint's ``state_dict`` is
    loaded strictly and its task state (e.g. class names) restored.  A missing checkpoint or config raises
    FileNotFoundError, a file that is not a readable checkpoint OSError, both naming the file.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    cfg = unresolved_train_config(find_train_config(ckpt_path, None))
    with open_dict(cfg):
        if cfg.get("module") is not None:
            cfg.module.init_checkpoint = None
            cfg.module.compile = False
        for key, value in (overrides or {}).items():
            OmegaConf.update(cfg, key, value, merge=False)
    module = build_module(cfg)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise OSError(f"cannot read checkpoint {ckpt_path}: {err}") from None
    module.load_state_dict(state["state_dict"] if "state_dict" in state else state, strict=True)
    module.on_load_checkpoint(state)
    return module.eval().to(device), cfg


def build_loggers(cfg: DictConfig) -> list:
    """Loggers from ``cfg.logger`` (a dict of named logger configs); W&B goes offline without credentials
    (:func:`hrformer.utils.wandb.has_credentials`)."""
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        if "Wandb" in lg_cfg._target_ and not lg_cfg.get("offline") and not has_credentials():
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


# ----------------------------------------------------------------------------------------------- results store
# Keys left out of the config hash: where a run writes, how it logs, and how it was started do not change what it
# computes (two runs with the same hash trained or evaluated the same thing).
HASH_EXCLUDE = ("paths", "hydra", "logger", "callbacks", "ckpt_path", "results_file", "threads", "task_name", "tags",
                "paper")


def config_hash(cfg: DictConfig) -> str:
    """sha256 (first 12 hex digits) of the unresolved config without :data:`HASH_EXCLUDE` keys."""
    import hashlib

    data = OmegaConf.to_container(cfg, resolve=False)
    data = {k: v for k, v in data.items() if k not in HASH_EXCLUDE}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit(root: str | Path | None = None) -> str | None:
    """HEAD of the checkout at ``root`` (``+dirty`` with uncommitted changes to tracked files), None outside git."""
    import subprocess

    root = Path(root or Path(__file__).resolve().parents[3])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def experiment_name(cfg: DictConfig) -> str | None:
    """The ``experiment=`` choice of this run (Hydra runtime), else its task_name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get("experiment")
        if choice:
            return choice
    except (ValueError, ImportError):
        pass
    return cfg.get("task_name")


def result_record(cfg: DictConfig, metrics: dict[str, float | None], kind: str, devices: int,
                  total_batch: int | None) -> dict[str, Any]:
    import datetime

    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,                          # train | eval
        "experiment": experiment_name(cfg),
        "task_name": cfg.get("task_name"),
        "key_metric": OmegaConf.select(cfg, "task.key_metric", default=None),
        "metrics": metrics,
        "git_commit": git_commit(OmegaConf.select(cfg, "paths.root_dir", default=None)),
        "config_hash": config_hash(cfg),
        "devices": devices,
        "total_batch": total_batch,
        "seed": cfg.get("seed"),
        "run_dir": str(OmegaConf.select(cfg, "paths.output_dir", default="")),
        "ckpt_path": str(cfg.get("ckpt_path")) if cfg.get("ckpt_path") else None,
    }


def results_path(cfg: DictConfig) -> str | None:
    """``cfg.results_file``, or None (with a warning) where it cannot be resolved: a config composed outside a
    Hydra run (``hydra.compose``) has no ``${hydra:runtime.cwd}`` behind the default output root."""
    try:
        return OmegaConf.select(cfg, "results_file", default=None)
    except Exception as err:  # noqa: BLE001 - any resolution failure means "no store", not a failed run
        log.warning("results_file not resolvable (%s): this run is not recorded in the results store", err)
        return None


def append_result(path: str | Path | None, record: dict[str, Any]) -> Path | None:
    """Append ``record`` as one JSON line to ``path`` (O_APPEND: concurrent sweep jobs do not interleave lines)."""
    if not path:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    log.info("result appended to %s", path)
    return path


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file; a line that is not JSON (a run killed mid-write) is skipped with a warning."""
    records = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: not a JSON line, skipped", path, i)
    return records


def trainer_scale(trainer: L.Trainer, cfg: DictConfig) -> tuple[int, int | None]:
    """(devices over all nodes, images per optimizer step over all of them)."""
    devices = int(trainer.world_size)
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    return devices, (int(batch) * devices * accumulate if batch is not None else None)

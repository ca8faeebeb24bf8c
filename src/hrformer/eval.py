"""Evaluation entry point: ``python -m hrformer.eval ckpt_path=PATH [key=value ...]``.

Uses the configuration saved with the training run (``RUN_DIR/config.yaml``; the checkpoint lives in
``RUN_DIR/checkpoints/``) unless ``train_config=PATH`` names another one, or ``experiment=NAME`` composes that
experiment's configuration (for converted official checkpoints, which have no training run).  Every other
``key=value`` given on the command line overrides that configuration (e.g. ``data.bbox_source=det data.det_file=...``).
Writes ``metrics.json`` to this evaluation's run directory.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from .utils.run import (
    append_result,
    build_module,
    find_train_config,
    finite_metrics,
    result_record,
    results_path,
    trainer_scale,
    unresolved_train_config,
    write_json,
)
from .utils.wandb import finish as finish_wandb

log = logging.getLogger(__name__)

OWN_KEYS = ("ckpt_path", "train_config", "from_experiment", "task_name", "hydra", "paths", "results_file")
_RUN_OVERRIDES: list[str] = []  # command-line overrides meant for the training run's config


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides of eval.yaml and Hydra itself, overrides of the training configuration).  Flags and their values
    (``--cfg job``: no ``=``) are Hydra's."""
    own, run = [], []
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        (own if arg.startswith("-") or "=" not in arg or key.split(".")[0] in OWN_KEYS else run).append(arg)
    return own, run


def rebase_paths(node: Any, old: str, new: str) -> Any:
    """Every string value in ``node`` (a plain container) under the directory ``old`` moved under ``new``."""
    if isinstance(node, dict):
        return {k: rebase_paths(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [rebase_paths(v, old, new) for v in node]
    if isinstance(node, str) and old and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old.rstrip("/")):]
    return node


def load_eval_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The training run's config with this command line's overrides applied, paths of this run.

    The saved config is resolved: every path in it under the training run's directory (a task's results file or
    per-class table, ``trainer.default_root_dir``) is pointed at this evaluation's directory instead, so an
    evaluation never overwrites what its training run wrote.
    """
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    if cfg.get("from_experiment"):
        # a checkpoint without a training run (a converted official one): the experiment's configuration
        from hydra import compose

        train_cfg = compose("train", overrides=[f"experiment={cfg.from_experiment}", *overrides])
        train_cfg = OmegaConf.create(OmegaConf.to_container(train_cfg, resolve=False))
    else:
        train_cfg = unresolved_train_config(find_train_config(ckpt_path, cfg.get("train_config")))
    train_dir = OmegaConf.select(train_cfg, "paths.output_dir", default=None)
    if train_dir:
        train_cfg = OmegaConf.create(rebase_paths(OmegaConf.to_container(train_cfg), str(train_dir),
                                                  str(cfg.paths.output_dir)))
    merged = OmegaConf.merge(train_cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    with open_dict(merged):
        merged.paths.output_dir = cfg.paths.output_dir
        merged.ckpt_path = str(ckpt_path)
        merged.results_file = results_path(cfg)   # this evaluation's output root, not the training run's
    return merged


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict[str, float]:
    run_cfg = load_eval_config(cfg, overrides)
    output_dir = Path(run_cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(run_cfg, resolve=True))
    L.seed_everything(run_cfg.seed, workers=True)
    datamodule = instantiate(run_cfg.data)
    module = build_module(run_cfg)
    state = torch.load(run_cfg.ckpt_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"] if "state_dict" in state else state, strict=True)
    # one process is enough to evaluate; the metric gathers over ranks when launched distributed anyway
    trainer: L.Trainer = instantiate(run_cfg.trainer, logger=False, enable_checkpointing=False, devices=1,
                                     strategy="auto", callbacks=[])
    trainer.validate(module, datamodule=datamodule)
    metrics = finite_metrics(trainer.callback_metrics)
    write_json(output_dir / "metrics.json", metrics)
    record = result_record(run_cfg, metrics, "eval", *trainer_scale(trainer, run_cfg))
    append_result(run_cfg.get("results_file"), record)
    log.info("metrics of %s: %s", run_cfg.ckpt_path, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    exit_code = 1
    try:
        evaluate(cfg, _RUN_OVERRIDES)
        exit_code = 0
    finally:
        finish_wandb(exit_code)


def main() -> None:
    # `experiment=NAME` would name eval.yaml's (absent) experiment group: it is this app's from_experiment key
    args = [f"from_experiment={a.split('=', 1)[1]}" if a.startswith("experiment=") else a for a in sys.argv[1:]]
    own, run = split_overrides(args)
    _RUN_OVERRIDES[:] = run
    sys.argv = [sys.argv[0], *own]
    _hydra_main()


if __name__ == "__main__":
    main()

"""Training entry point: ``python -m hrformer.train [experiment=...] [key=value ...]`` (a Hydra app).

The run directory (``hydra.run.dir``) receives the resolved ``config.yaml``, ``checkpoints/`` (``last.ckpt``
and the best by the task's key metric), ``metrics.json`` (the final validation metrics) and pictures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf

from .utils.run import (
    append_result,
    build_callbacks,
    build_loggers,
    build_module,
    finish_wandb,
    finite_metrics,
    link_wandb_runs,
    result_record,
    results_path,
    trainer_scale,
    write_json,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    # With a spawning strategy (ddp_spawn) training ran in child processes: this process's module never saw their
    # validations, so it cannot tell; metrics.json then holds the children's last validation.
    spawned = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
    if not spawned and module.last_validated_step != trainer.global_step and trainer.limit_val_batches != 0:
        # the final weights were not validated (check_val_every_n_epoch does not divide max_epochs, val_check_interval
        # does not divide max_steps, max_time stopped the run): validate them, so that metrics.json is always the
        # final model's, never an earlier one's (and runs that ended on a validation are not validated twice)
        log.info("validating the final model (step %d was not validated)", trainer.global_step)
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = finite_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        link_wandb_runs(loggers, output_dir)
        append_result(results_path(cfg), result_record(cfg, metrics, "train", *trainer_scale(trainer, cfg)))
    log.info("final validation metrics: %s", metrics)
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_path:
        log.info("best checkpoint: %s (%s = %s)", ckpt.best_model_path, ckpt.monitor, ckpt.best_model_score)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


if __name__ == "__main__":
    main()

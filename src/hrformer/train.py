"""Training entry point: ``python -m hrformer.train [experiment=...] [key=value ...]`` (a Hydra app; installed as
``hrformer-train``).

The run directory (``hydra.run.dir``) receives the resolved ``config.yaml``, ``status.json`` (running, finished,
failed with the step and error, requeued: :mod:`hrformer.utils.status`), ``wandb_run.json`` (from the start, with a
W&B logger), ``checkpoints/`` (``last.ckpt``, kept current during training, and the best by the task's key
metric), ``metrics.json`` (the final validation metrics) and pictures.

``python -m hrformer.train resume=RUN_DIR [key=value ...]`` continues a stopped run in its own directory, with its
own configuration, from its latest checkpoint (:mod:`hrformer.utils.resume`); a run that requeued itself under
SLURM does so by itself (:mod:`hrformer.utils.slurm`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from .data.bad_images import SkippedImagesLog
from .nonfinite import NonFiniteLossGuard
from .requeue import Requeue
from .utils import wandb as wandb_run
from .utils.resume import checkpoint_to_resume, resume_arguments
from .utils.run import (
    append_result,
    build_callbacks,
    build_loggers,
    build_module,
    finite_metrics,
    result_record,
    results_path,
    trainer_scale,
    write_json,
)
from .utils.smoke import smoke_reason
from .utils.status import RunStatus, read_status, write_status
from .utils.sweep import trial_value

log = logging.getLogger(__name__)

NEEDS_A_LOGGER = (LearningRateMonitor,)


def run_callbacks(cfg: DictConfig, output_dir: Path, datamodule, has_logger: bool) -> list[L.Callback]:
    """The configured callbacks (without those that need a logger when there is none) and the ones every run has:
    its status file, the non-finite loss guard, the SLURM requeue, the skipped-image count."""
    callbacks = build_callbacks(cfg)
    if not has_logger:
        dropped = [type(c).__name__ for c in callbacks if isinstance(c, NEEDS_A_LOGGER)]
        if dropped:
            log.info("no logger: %s left out", ", ".join(dropped))
        callbacks = [c for c in callbacks if not isinstance(c, NEEDS_A_LOGGER)]
    callbacks += [RunStatus(output_dir), NonFiniteLossGuard(cfg.get("on_nonfinite_loss") or "raise"),
                  Requeue(output_dir)]
    if getattr(datamodule, "on_bad_image", "raise") == "skip":
        callbacks.append(SkippedImagesLog())
    return callbacks


def train(cfg: DictConfig) -> dict[str, float]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_to_resume(cfg, output_dir)   # every rank decides before rank zero's RunStatus writes
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    wandb_run.prepare_run(cfg, output_dir, rank_zero=rank_zero_only.rank == 0)
    loggers = build_loggers(cfg)
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []   # see utils/slurm.py
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=run_callbacks(cfg, output_dir, datamodule, bool(loggers)),
                                     logger=loggers or False, plugins=plugins)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if trainer.is_global_zero:
        wandb_run.start_runs(loggers, output_dir, OmegaConf.select(cfg, "task.key_metric", default=None),
                             OmegaConf.select(cfg, "task.key_metric_mode", default="max"))

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
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
        record = result_record(cfg, metrics, "train", *trainer_scale(trainer, cfg))
        record["smoke"] = smoke_reason(cfg)
        if record["smoke"]:
            log.info("smoke run (%s): its results-store record is marked so, the paper tables skip it",
                     record["smoke"])
        append_result(results_path(cfg), record)
        write_status(output_dir, "finished", trainer.global_step, trainer.current_epoch)
    log.info("final validation metrics: %s", metrics)
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and getattr(ckpt, "best_model_path", None):
        log.info("best checkpoint: %s (%s = %s)", ckpt.best_model_path, ckpt.monitor, ckpt.best_model_score)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    output_dir = Path(cfg.paths.output_dir)
    try:
        metrics = train(cfg)
    except BaseException as err:
        state = (read_status(output_dir) or {}).get("state")
        if state == "requeued":
            wandb_run.finish(preempted=True)
            if isinstance(err, Exception):   # Requeued (or a spawned rank's copy of it); submitit's exit goes on
                log.warning("stopped for the requeue: the next start of this job resumes %s", output_dir)
                return None
            raise
        if state in (None, "running"):
            write_status(output_dir, "failed", error=err)   # failed outside fit, or in another (spawned) rank
        wandb_run.finish(exit_code=1)
        value = trial_value(cfg, None, err) if isinstance(err, Exception) else None
        if value is None:
            raise
        log.exception("sweep trial failed")
        return value
    wandb_run.finish()
    return trial_value(cfg, metrics)


def main() -> None:
    """``hrformer-train``: ``resume=RUN_DIR`` expanded to that run's overrides (:mod:`hrformer.utils.resume`)."""
    sys.argv = [sys.argv[0], *resume_arguments(sys.argv[1:])]
    _hydra_main()


if __name__ == "__main__":
    main()

"""Continuing a stopped run in its own directory: ``python -m hrformer.train resume=RUN_DIR [key=value ...]``.

- :func:`resume_arguments` turns ``resume=RUN_DIR`` on the command line into the run's own overrides
  (``RUN_DIR/.hydra/overrides.yaml``), then this command line's (which replace those of the same key), and
  ``hydra.run.dir=RUN_DIR``: the same configuration, the same run directory (and so the same results record and
  W&B run, :mod:`hrformer.utils.wandb`);
- :func:`checkpoint_to_resume` picks what ``trainer.fit`` starts from: with ``resume=`` (or when ``status.json``
  says the run requeued itself, :mod:`hrformer.utils.slurm`) the run directory's latest checkpoint
  (:func:`latest_checkpoint`, mid-epoch ones included, :class:`hrformer.checkpointing.ResumeCheckpoint`); else
  ``ckpt_path`` (``last``: the latest checkpoint of this run's directory).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig

from .status import read_status

log = logging.getLogger(__name__)

# overrides of the stopped run that are not replayed: how it was started, not what it computes
NOT_REPLAYED = ("resume", "ckpt_path", "hparams_search", "hydra.run.dir")


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``; ``~a`` -> ``a``; ``hydra/launcher=x`` -> ``hydra/launcher``."""
    return override.split("=", 1)[0].lstrip("+~")


def resume_arguments(args: list[str]) -> list[str]:
    """The command-line arguments with ``resume=RUN_DIR`` expanded (see the module docstring); unchanged without
    it.  A folder that is not a run directory of ``hrformer.train`` exits with a message naming it."""
    resume = [a for a in args if not a.startswith("-") and override_key(a) == "resume"]
    if not resume:
        return args
    run_dir = Path(resume[-1].split("=", 1)[1]).expanduser().resolve()
    stored_file = run_dir / ".hydra" / "overrides.yaml"
    if not stored_file.is_file():
        raise SystemExit(f"resume={run_dir}: not the directory of a hrformer.train run (no {stored_file})")
    stored = yaml.safe_load(stored_file.read_text()) or []
    given = [a for a in args if "=" in a and not a.startswith("-")]
    other = [a for a in args if a not in given]   # flags such as --cfg job
    replace = {override_key(a) for a in given} | set(NOT_REPLAYED)
    replayed = [o for o in stored if override_key(o) not in replace]
    kept = [a for a in given if override_key(a) not in ("resume", "hydra.run.dir")]
    return [*other, *replayed, *kept, f"hydra.run.dir={run_dir}", f"resume={run_dir}"]


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was written at (-1 for a file that is not a readable checkpoint)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))
    except Exception as err:  # noqa: BLE001 - any unreadable file is no candidate
        log.warning("%s is not a readable checkpoint (%s): not resumed from", path, err)
        return -1


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of ``run_dir`` written at the highest global step (``checkpoints/*.ckpt`` and Lightning's
    ``hpc_ckpt_*.ckpt``; at equal steps ``last.ckpt``, then the newest), None when there is none."""
    run_dir = Path(run_dir)
    candidates = [(checkpoint_step(p), p.name == "last.ckpt", p.stat().st_mtime, p)
                  for p in [*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]]
    candidates = [c for c in candidates if c[0] >= 0]
    return max(candidates, key=lambda c: c[:3])[3] if candidates else None


def checkpoint_to_resume(cfg: DictConfig, run_dir: str | Path) -> str | None:
    """What ``trainer.fit`` resumes from (None: a fresh start); see the module docstring."""
    run_dir = Path(run_dir)
    requeued = (read_status(run_dir) or {}).get("state") == "requeued"
    explicit = cfg.get("ckpt_path")
    if cfg.get("resume") or requeued:
        if explicit:
            raise ValueError(f"ckpt_path={explicit} with resume={cfg.get('resume') or run_dir}: the run resumes "
                             "from its own latest checkpoint; give one or the other")
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            log.warning("resuming %s: no checkpoint there yet, training starts from the beginning", run_dir)
            return None
        log.info("resuming %s from %s (step %d)%s", run_dir, ckpt, checkpoint_step(ckpt),
                 " after a requeue" if requeued else "")
        return str(ckpt)
    if explicit == "last":
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            log.warning("ckpt_path=last: no checkpoint in %s (pin the old run with resume=RUN_DIR); training starts "
                        "from the beginning", run_dir)
        return str(ckpt) if ckpt else None
    return explicit

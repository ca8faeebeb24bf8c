"""W&B hygiene: credentials for the public or a self-hosted server, one W&B run per run directory (its id written
at the start, so that a crashed run still names it and a resumed run continues it), the key metric's best value as
its summary, and the run's end marked finished, failed or preempted."""

from __future__ import annotations

import configparser
import json
import logging
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

RUN_FILE = "wandb_run.json"
PUBLIC_SERVER = "https://api.wandb.ai"


def server_url() -> str:
    """The W&B server runs log to: ``$WANDB_BASE_URL``, else ``base_url`` of W&B's settings file
    (``$WANDB_CONFIG_DIR`` or ``~/.config/wandb``, written by ``wandb login --host``), else the public server."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    settings = Path(os.environ.get("WANDB_CONFIG_DIR", Path.home() / ".config" / "wandb")) / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings)
    except configparser.Error:
        return PUBLIC_SERVER
    return parser.get("default", "base_url", fallback=PUBLIC_SERVER)


def has_credentials() -> bool:
    """``$WANDB_API_KEY``, or a netrc entry (``$NETRC`` or ``~/.netrc``, as ``wandb login`` writes it) for the
    server of :func:`server_url` (its host with or without the port)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.is_file():
        return False
    parts = urlsplit(server_url() if "://" in server_url() else f"https://{server_url()}")
    hosts = [h for h in (parts.netloc, parts.hostname) if h]
    try:
        entries = netrc.netrc(path)
    except (netrc.NetrcParseError, OSError) as err:
        log.warning("cannot parse %s (%s): no W&B credentials taken from it", path, err)
        return False
    return any((entries.authenticators(h) or (None, None, None))[2] for h in hosts)


def wandb_logger_config(cfg: DictConfig) -> DictConfig | None:
    for lg_cfg in (cfg.get("logger") or {}).values():
        if lg_cfg is not None and "Wandb" in str(lg_cfg.get("_target_", "")):
            return lg_cfg
    return None


def read_run_file(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def prepare_run(cfg: DictConfig, run_dir: str | Path, rank_zero: bool = True) -> str | None:
    """Before the loggers are built: give the W&B logger of ``cfg`` its run id (the one ``run_dir/wandb_run.json``
    names when the directory already had a W&B run, e.g. a resumed or requeued run; else a new one) with
    ``resume="allow"``, and write that file on rank zero now, before anything can fail.  Returns the id (None
    without a W&B logger)."""
    lg_cfg = wandb_logger_config(cfg)
    if lg_cfg is None:
        return None
    previous = read_run_file(run_dir) or {}
    run_id = lg_cfg.get("id") or previous.get("id")
    if not run_id:   # as W&B makes them: 8 characters of [a-z0-9]
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    with open_dict(lg_cfg):
        lg_cfg.id = run_id
        lg_cfg.resume = "allow"
    if rank_zero:
        write_run_file(run_dir, {"id": run_id, "project": lg_cfg.get("project"), "group": lg_cfg.get("group"),
                                 "name": lg_cfg.get("name"), "url": None, "offline": None})
    return run_id


def write_run_file(run_dir: str | Path, record: dict[str, Any]) -> None:
    path = Path(run_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def start_runs(loggers: list, run_dir: str | Path, key_metric: str | None, mode: str = "max") -> None:
    """Once the loggers exist (rank zero): create each W&B run, give ``key_metric`` a ``mode`` summary (the best
    value, not the last) and record the run in ``run_dir/wandb_run.json`` with its URL."""
    for lg in loggers:
        experiment = getattr(lg, "experiment", None) if type(lg).__name__ == "WandbLogger" else None
        if experiment is None or not hasattr(experiment, "id"):
            continue   # not W&B, or not rank zero
        if key_metric:
            experiment.define_metric(key_metric, summary=mode)
        write_run_file(run_dir, {
            "id": experiment.id, "project": experiment.project, "group": experiment.group, "name": experiment.name,
            "url": getattr(experiment, "url", None), "offline": bool(getattr(experiment.settings, "_offline", False))})


def finish(exit_code: int = 0, preempted: bool = False) -> None:
    """Close the W&B run of this process (so that multirun jobs do not leak into each other): ``exit_code`` != 0
    shows it as failed; ``preempted`` marks it preempted (to be resumed) first."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is None:
        return
    if preempted:
        wandb.run.mark_preempting()
    wandb.finish(exit_code=exit_code)

"""What a sweep trial returns to the sweeper: the key metric, or, for a failed trial (an error, a NaN or missing
metric), the worst value for the search's direction, so that the search goes on.

hydra-optuna-sweeper 1.2 (the ``[sweep]`` extra) aborts the whole search on anything else: it re-raises a trial's
exception after telling Optuna the trial failed, and Optuna 2.10 refuses NaN (``study.tell`` raises, and the
sweeper's fallback ``tell(state=FAIL, values=[nan])`` raises too) and None is not float-castable.  So a failed
trial is told as complete with ``-inf`` when maximising (``+inf`` when minimising): it ranks last and steers TPE
away from its parameters, its run directory's ``status.json`` says ``failed`` with the error, and ``metrics.json``
holds null for a NaN metric.
"""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def sweep_direction() -> str | None:
    """``maximize``/``minimize`` of the Optuna sweeper running this job, None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        sweeper = HydraConfig.get().sweeper
    except (ImportError, ValueError):
        return None
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    direction = sweeper.get("direction", "minimize")
    return str(direction[0] if not isinstance(direction, str) else direction).lower()


def trial_value(cfg: DictConfig, metrics: dict | None, error: BaseException | None = None) -> float | None:
    """The value of ``cfg.optimized_metric`` in ``metrics``; in an Optuna search, the worst value for its
    direction when the trial failed or the metric is missing or not finite."""
    key = cfg.get("optimized_metric")
    value = (metrics or {}).get(key) if key else None
    direction = sweep_direction()
    if direction is None or (error is None and value is not None and math.isfinite(value)):
        return value
    worst = math.inf if direction.startswith("min") else -math.inf
    reason = f"it failed ({type(error).__name__}: {error})" if error is not None else f"{key} is {value}"
    log.warning("sweep trial failed: %s; returning %s so that the search goes on", reason, worst)
    return worst

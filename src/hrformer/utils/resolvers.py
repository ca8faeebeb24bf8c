"""The OmegaConf resolvers that the configs use, registered when ``hrformer`` is imported.

- ``${hrformer_root:}``: the project root (:func:`hrformer.utils.paths.project_root`), under which ``data/`` and
  ``outputs/`` go by default;
- ``${composition_name:}``: ``<task>_<data>_<backbone>`` from the Hydra group choices of this run (the
  ``task_name`` of a run composed without ``experiment=``; ``train`` outside a Hydra run);
- ``${run_name:EXPERIMENT,OVERRIDES}``: ``experiment:overrides``, the W&B name of a job (just the experiment when
  there are no overrides);
- ``${run_dir_name:DEFAULT}``: ``slurm-<job id>`` in a SLURM batch job, else DEFAULT (the start time), the name of
  a run directory (:func:`hrformer.utils.slurm.run_dir_name`).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from .paths import project_root
from .slurm import run_dir_name

COMPOSITION_GROUPS = ("task", "data", "backbone")


def composition_name() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except (ImportError, ValueError):   # not inside a Hydra run (e.g. hydra.compose without the hydra node)
        return "train"
    parts = [str(choices.get(group)) for group in COMPOSITION_GROUPS if choices.get(group)]
    return "_".join(parts) or "train"


def run_name(experiment: str, overrides: str = "") -> str:
    return f"{experiment}:{overrides}" if overrides else str(experiment)


for _name, _fn in (("hrformer_root", lambda: str(project_root())), ("composition_name", composition_name),
                   ("run_name", run_name), ("run_dir_name", run_dir_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)

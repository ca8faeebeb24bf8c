"""Where the project's files live: the package's Hydra configs and the root that data and outputs go under.

The root does not depend on the working directory: ``$HRFORMER_ROOT`` if set, else the source checkout this
package runs from (an editable install), else ``~/hrformer`` (a plain ``pip install``).  ``conf/paths/default.yaml``
puts ``data/`` and ``outputs/`` under it; ``$HRFORMER_DATA`` and ``$HRFORMER_OUTPUT`` move either one, and
``paths.root_dir=...`` / ``paths.log_dir=...`` on the command line override everything.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"   # the Hydra configs, shipped inside the package


def project_root() -> Path:
    """``$HRFORMER_ROOT``, else the source checkout holding this package, else ``~/hrformer``."""
    env = os.environ.get("HRFORMER_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[3]   # <checkout>/src/hrformer/utils/paths.py
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "hrformer").is_dir():
        return checkout
    return Path.home() / "hrformer"


def default_log_dir() -> Path:
    """Where runs and the results store go by default: ``$HRFORMER_OUTPUT``, else ``<project root>/outputs``."""
    env = os.environ.get("HRFORMER_OUTPUT")
    return Path(env).expanduser().resolve() if env else project_root() / "outputs"


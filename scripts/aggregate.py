"""A sweep folder -> one table of its jobs sorted by the key metric.

    python scripts/aggregate.py outputs/train/multiruns/2026-11-21_10-00-00 [--json OUT.json] [--ascending]

Each job directory (``hydra.sweep.subdir``) holds ``metrics.json`` (written by ``hrformer.train``), its
``config.yaml`` (the key metric is ``task.key_metric``, max or min by ``task.key_metric_mode``) and Hydra's
``.hydra/overrides.yaml`` (the job's command-line overrides: the sweep's varying parameters).  Jobs without
``metrics.json`` (failed or still running) are listed last as ``not finished``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml


def job_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` that are Hydra jobs (have .hydra/ or config.yaml or metrics.json)."""
    found = {p.parent for name in ("metrics.json", "config.yaml") for p in root.rglob(name)}
    found |= {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    return sorted(d for d in found if d.name != ".hydra")


def read_job(job: Path) -> dict:
    overrides = []
    ov_file = job / ".hydra" / "overrides.yaml"
    if ov_file.is_file():
        overrides = yaml.safe_load(ov_file.read_text()) or []
    cfg = yaml.safe_load((job / "config.yaml").read_text()) if (job / "config.yaml").is_file() else {}
    task = (cfg or {}).get("task") or {}
    metrics = json.loads((job / "metrics.json").read_text()) if (job / "metrics.json").is_file() else None
    return {"job": str(job), "overrides": overrides, "metrics": metrics, "key_metric": task.get("key_metric"),
            "mode": task.get("key_metric_mode", "max")}


def varying(jobs: list[dict]) -> list[str]:
    """Override keys whose values differ between jobs (the swept parameters), in first-seen order."""
    values: dict[str, set] = {}
    for job in jobs:
        for ov in job["overrides"]:
            key, _, value = ov.partition("=")
            values.setdefault(key, set()).add(value)
    keys = [k for k, v in values.items() if len(v) > 1 or len(jobs) == 1]
    return keys or list(values)


def aggregate(root: Path, ascending: bool | None = None) -> tuple[list[dict], str | None]:
    jobs = [read_job(j) for j in job_dirs(root)]
    if not jobs:
        raise FileNotFoundError(f"no Hydra job directories under {root}")
    key = next((j["key_metric"] for j in jobs if j["key_metric"]), None)
    mode = next((j["mode"] for j in jobs if j["key_metric"]), "max")
    if ascending is None:
        ascending = mode == "min"

    def sort_key(job: dict):
        value = (job["metrics"] or {}).get(key) if key else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0)
        return (0, value if ascending else -value)

    return sorted(jobs, key=sort_key), key


def markdown(jobs: list[dict], key: str | None) -> str:
    params = varying(jobs)
    others = sorted({m for j in jobs for m in (j["metrics"] or {}) if m != key})
    metric_cols = ([key] if key else []) + others
    header = ["rank", *params, *metric_cols, "job"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, job in enumerate(jobs, 1):
        ov = dict(o.partition("=")[::2] for o in job["overrides"])
        if job["metrics"] is None:
            cells = ["not finished"] * len(metric_cols)
        else:
            cells = ["—" if job["metrics"].get(m) is None else f"{job['metrics'][m]:.4f}" for m in metric_cols]
        lines.append("| " + " | ".join([str(rank), *(ov.get(p, "") for p in params), *cells,
                                         Path(job["job"]).name]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("multirun_dir", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the sorted jobs as JSON")
    p.add_argument("--ascending", action="store_true", default=None, help="smallest key metric first")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    jobs, key = aggregate(args.multirun_dir, args.ascending)
    print(f"{len(jobs)} jobs in {args.multirun_dir}, sorted by {key}\n")
    print(markdown(jobs, key))
    if args.json:
        args.json.write_text(json.dumps({"key_metric": key, "jobs": jobs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

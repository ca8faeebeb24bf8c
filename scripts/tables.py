"""Markdown tables of the papers' rows: our result, the paper's, the difference, parameters and GMACs.

    python scripts/tables.py --table coco                       # one table from outputs/results.jsonl
    python scripts/tables.py --all --out-dir docs/tables        # every table, rows not yet run marked
    python scripts/tables.py --list coco                        # the experiments of one table (for make)

Rows are the experiment files (``src/hrformer/conf/experiment/*.yaml``) with a ``paper:`` block (``table``,
``metrics``; the first metric is the table's column).  Our number is the latest record of that experiment in the
results store (``hrformer.train`` / ``hrformer.eval`` append to ``outputs/results.jsonl``), smoke runs left out.
Parameters and GMACs come from ``docs/complexity.md`` (``scripts/complexity.py``'s data) for the row's backbone,
task and test input.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from hrformer.utils.paths import CONFIG_DIR, default_log_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = CONFIG_DIR / "experiment"
COMPLEXITY = REPO_ROOT / "docs" / "complexity.md"
DEFAULT_RESULTS = default_log_dir() / "results.jsonl"
TABLES = {  # table: title
    "imagenet": "ImageNet-1K classification (224x224, single crop): top-1",
    "coco": "COCO val2017 pose estimation (detected boxes, flip test): AP",
    "cityscapes": "Cityscapes val segmentation (single scale): mIoU",
    "pascal-context": "PASCAL-Context (59 classes, single scale): mIoU",
    "coco-stuff": "COCO-Stuff-164k (single scale): mIoU",
    "ade20k": "ADE20K (single scale): mIoU",
}
NOT_RUN = "not run"


def load_rows(table: str | None = None) -> list[dict]:
    """Experiment rows with a ``paper:`` block (optionally of one table), in file-name order."""
    return [r for r in _all_rows(EXPERIMENTS) if table is None or r["table"] == table]


@functools.lru_cache(maxsize=4)
def _all_rows(folder: Path) -> tuple[dict, ...]:
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        paper = cfg.get("paper")
        if not paper:
            continue
        if paper.table not in TABLES:
            raise ValueError(f"{path}: paper.table {paper.table!r} is not one of {sorted(TABLES)}")
        entries = OmegaConf.to_container(cfg.get("defaults", []))
        defaults = {k: v for d in entries if isinstance(d, dict) for k, v in d.items()}
        task = str(defaults.get("override /task", "cls"))
        rows.append({"experiment": path.stem, "table": paper.table, "metrics": dict(paper.metrics),
                     "backbone": defaults.get("override /backbone"), "task": task, "input": test_input(cfg, task)})
    return tuple(rows)


def test_input(cfg, task: str) -> str | None:
    """The complexity table's input column for this row: pose crop, Cityscapes' 1024x2048 test image, cls 224."""
    if task == "pose":
        w, h = cfg.task.codec.input_size
        return f"{h}x{w}"
    if task == "seg":
        return "1024x2048" if cfg.paper.table == "cityscapes" else None
    return "224x224"


def load_complexity(path: Path = COMPLEXITY) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(model, task, input) -> (params in M, GMACs) from the generated Markdown of scripts/complexity.py."""
    out: dict[tuple[str, str, str], tuple[float, float]] = {}
    if not path.is_file():
        return out
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    if not lines:
        return out
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    idx = {name: header.index(name) for name in ("model", "task", "input", "params (M)", "GMACs (ours)")}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            continue
        key = (cells[idx["model"]], cells[idx["task"]], cells[idx["input"]])
        out.setdefault(key, (float(cells[idx["params (M)"]]), float(cells[idx["GMACs (ours)"]])))
    return out


def latest_results(paths: list[Path]) -> dict[str, dict]:
    """experiment -> its latest record over the given results files (later lines win), smoke runs left out (debug
    runs, limited batches or a training budget cut below the recipe's: ``"smoke"`` in the record)."""
    latest: dict[str, dict] = {}
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("experiment") and not record.get("smoke"):
                latest[record["experiment"]] = record
    return latest


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def render_table(table: str, results: dict[str, dict], complexity: dict) -> str:
    rows = load_rows(table)
    lines = [f"### {TABLES[table]}", "", "| experiment | params (M) | GMACs | ours | paper | diff | run |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        metric, paper = next(iter(row["metrics"].items()))
        params, gmacs = complexity.get((row["backbone"], row["task"], row["input"] or ""), (None, None))
        record = results.get(row["experiment"])
        ours = (record.get("metrics") or {}).get(metric) if record else None
        if record is None:
            ours_s, diff_s, run = NOT_RUN, "—", "—"
        else:
            ours_s = _pct(ours)
            diff_s = "—" if ours is None else f"{100 * (ours - paper):+.1f}"
            run = f"{record.get('kind')} {str(record.get('git_commit') or '')[:8]} x{record.get('devices')}"
        lines.append(f"| {row['experiment']} | {'—' if params is None else f'{params:.1f}'} | "
                     f"{'—' if gmacs is None else f'{gmacs:.1f}'} | {ours_s} | {_pct(paper)} | {diff_s} | {run} |")
    lines += ["", f"{metric_note(rows)}; GMACs: ours (multiply-adds / 1e9, docs/complexity.md) at the test input, "
              "— where that table has no such row (window 13/15 rows: the window-7 count).", ""]
    return "\n".join(lines)


def metric_note(rows: list[dict]) -> str:
    metrics = sorted({next(iter(r["metrics"])) for r in rows})
    return f"{', '.join(metrics)} in percent; diff = ours - paper"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--table", choices=sorted(TABLES), help="render one table")
    g.add_argument("--all", action="store_true", help="render every table")
    g.add_argument("--list", choices=sorted(TABLES), help="print the experiments of one table, one a line")
    p.add_argument("--results", type=Path, action="append", help=f"results file(s) (default {DEFAULT_RESULTS})")
    p.add_argument("--complexity", type=Path, default=COMPLEXITY)
    p.add_argument("--out-dir", type=Path, default=None, help="also write TABLE.md files here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print("\n".join(r["experiment"] for r in load_rows(args.list)))
        return 0
    results = latest_results(args.results or [DEFAULT_RESULTS])
    complexity = load_complexity(args.complexity)
    for table in (sorted(TABLES) if args.all else [args.table]):
        text = render_table(table, results, complexity)
        print(text)
        if args.out_dir:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            (args.out_dir / f"{table}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

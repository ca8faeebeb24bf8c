#!/usr/bin/env python
"""Throughput / memory / achieved-FLOP-rate benchmark of backbone + task head.

    python scripts/benchmark.py --models hrformer_t,hrformer_s,hrnet_w32 --task pose --input 256x192 \\
        --batch 8 --mode train,infer --device cpu --threads 2 --json /tmp/bench.json

Per model and mode it builds the task model with ``hrformer.models.task_models.build_task_model`` (pose:
official single-output backbone + HeatmapHead; cls: multi-scale backbone + HRClassificationHead; seg:
multi-scale backbone + OCRHead for HRFormer, UpsampleConcatHead for HRNet, 19 classes), runs ``--warmup``
untimed and ``--iters`` timed steps and reports the median step.  A dense matmul on the same device /
threads / precision gives the reference rate for ``fraction_of_matmul``.

Conventions: FLOPs = 2 x MACs (MACs counted on the meta device, conv/matmul/attention only); a train
step counts as 3 x forward FLOPs.  ``peak_mem_mb`` is CUDA ``max_memory_allocated`` growth on GPU and
process peak-RSS (``ru_maxrss``) growth on CPU — process-level and approximate; by default each case
runs in its own spawned process so that number is per case.  See ``hrformer.utils.benchmark``.

Exit status: 0 on success, 1 if some case failed, 2 on a usage error (one-line message).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

COLUMNS = [
    # (header, key, format); step is shown in ms
    ("model", "model", "{}"),
    ("impl", "impl", "{}"),
    ("mode", "mode", "{}"),
    ("img/s", "img_per_s", "{:.2f}"),
    ("step ms", "step_ms", "{:.0f}"),
    ("peak MB", "peak_mem_mb", "{:.0f}"),
    ("GMACs/img", "gmacs_per_img", "{:.2f}"),
    ("GFLOP/s", "gflops_per_s", "{:.1f}"),
    ("matmul GFLOP/s", "matmul_gflops_per_s", "{:.1f}"),
    ("of matmul", "fraction_of_matmul", "{:.1%}"),
]


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="hrformer_t,hrformer_s,hrnet_w32",
                   help="comma-separated backbone names")
    p.add_argument("--task", default="pose", help="pose | cls | seg")
    p.add_argument("--input", default="256x192", help="HxW, e.g. 256x192 (a single number means square)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mode", default="train,infer", help="train, infer or train,infer")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--precision", default="32",
                   help="32 | bf16 | 16 (bf16/16 via torch.autocast; 16 not on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--compile", action="store_true",
                   help="model.compile() in place (warm-up includes compiling)")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and input")
    p.add_argument("--impl", default="fast",
                   help="attention implementation(s), comma-separated (e.g. fast,reference), passed as attn_impl "
                        "to backbones that accept it (others report 'fast')")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the reference square matmul")
    p.add_argument("--no-isolate", action="store_true",
                   help="run all cases in this process (faster start; CPU peak_mem_mb becomes a lower bound)")
    p.add_argument("--json", type=Path, default=None, help="write the result rows to this JSON file")
    return p


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def validate(args: argparse.Namespace) -> None:
    """Turn every bad option into a UsageError (checked before any case runs)."""
    from hrformer.models import list_backbones
    from hrformer.utils.benchmark import MODES, TASKS, check_device_precision, parse_input_size

    args.models = _split(args.models)
    if not args.models:
        raise UsageError("--models is empty")
    known = list_backbones()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    if args.task not in TASKS:
        raise UsageError(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}")
    args.impls = _split(args.impl)
    if not args.impls:
        raise UsageError("--impl is empty")
    args.modes = _split(args.mode)
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        raise UsageError(f"bad --mode {args.mode!r}; use train, infer or train,infer")
    try:
        args.height, args.width = parse_input_size(args.input)
        check_device_precision(args.device, args.precision)
    except ValueError as err:
        raise UsageError(str(err)) from None
    for name in ("batch", "iters", "matmul_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        raise UsageError("--warmup must be >= 0")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")


def print_table(rows: list[dict], title: str) -> None:
    cells = [[fmt.format({**r, "step_ms": r["step_s"] * 1e3}[key]) for _, key, fmt in COLUMNS] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        headers = [h for h, _, _ in COLUMNS]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        for c in cells:
            print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
        return
    table = Table(title=title)
    for i, (header, _, _) in enumerate(COLUMNS):
        table.add_column(header, justify="left" if i < 3 else "right")
    for c in cells:
        table.add_row(*c)
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        validate(args)
    except UsageError as err:
        print(f"benchmark.py: error: {err}", file=sys.stderr)
        return 2

    import torch

    from hrformer.utils.benchmark import (
        CPU_MEM_NOTE,
        CUDA_MEM_NOTE,
        FLOPS_CONVENTION,
        BenchCase,
        machine_name,
        matmul_gflops,
        run_case,
        run_case_isolated,
    )

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__} | {args.device}: {machine_name(args.device)} | threads {threads} | "
          f"precision {args.precision} | task {args.task} | input {args.height}x{args.width} | "
          f"batch {args.batch} | warmup {args.warmup}, iters {args.iters} | "
          f"load avg (1 min) {os.getloadavg()[0]:.2f}", flush=True)
    matmul_rate = matmul_gflops(args.device, args.precision, n=args.matmul_size,
                                warmup=args.warmup, iters=max(args.iters, 3))
    print(f"reference matmul {args.matmul_size}^3 ({args.precision}): {matmul_rate:.1f} GFLOP/s", flush=True)

    rows, failed = [], 0
    for model in args.models:
        for mode in args.modes:
            for impl in args.impls:
                case = BenchCase(model=model, task=args.task, mode=mode, height=args.height, width=args.width,
                                 batch=args.batch, device=args.device, precision=args.precision, threads=threads,
                                 channels_last=args.channels_last, compile=args.compile, warmup=args.warmup,
                                 iters=args.iters, impl=impl)
                try:
                    row = (run_case if args.no_isolate else run_case_isolated)(case, matmul_rate)
                except Exception as err:  # report and go on with the other cases
                    failed += 1
                    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    print(f"FAILED {model} {mode} {impl}: {type(err).__name__}: {msg}", file=sys.stderr,
                          flush=True)
                    continue
                rows.append(row)
                print(f"  {model:<18} {mode:<5} {row['impl']:<9} {row['img_per_s']:8.2f} img/s  "
                      f"step {row['step_s'] * 1e3:8.0f} ms  peak {row['peak_mem_mb']:7.0f} MB", flush=True)
                if row["impl"] == "-":   # no attn_impl option (e.g. HRNet): its one implementation, measured once
                    break

    if rows:
        title = (f"{args.task} {args.height}x{args.width} batch {args.batch} | "
                 f"{args.device} {args.precision} | threads {threads}"
                 f"{' | channels_last' if args.channels_last else ''}"
                 f"{' | compile' if args.compile else ''}")
        print_table(rows, title)
        mem_note = CUDA_MEM_NOTE if args.device == "cuda" else CPU_MEM_NOTE
        print(f"Notes: {FLOPS_CONVENTION}. peak_mem_mb: {mem_note}"
              f"{'' if args.no_isolate else ' (each case in its own process)'}.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

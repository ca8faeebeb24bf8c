"""Reusable timing helpers for throughput / memory benchmarks of the backbones with a task head.

    from hrformer.utils.benchmark import BenchCase, run_case
    row = run_case(BenchCase(model="hrformer_t", task="pose", mode="infer", height=256, width=192))

Conventions (also written into every result row under ``notes``):

- Steps are timed with ``time.perf_counter``; on CUDA the device is synchronised before each clock read.
  The reported step time is the median of the timed iterations (after ``warmup`` untimed ones).
- MACs come from ``torch.utils.flop_counter.FlopCounterMode`` on the meta device with batch 1 (so
  ``scaled_dot_product_attention`` is counted as its two batched matmuls); only convolutions, matmuls and
  attention are counted, not normalisation / activations / element-wise ops.  FLOPs = 2 x MACs.
  A training step (forward + backward + optimizer) is counted as 3 x the forward FLOPs.
- ``peak_mem_mb``: on CUDA the growth of ``torch.cuda.max_memory_allocated`` over the case (model,
  gradients, optimizer state, activations; not the caching allocator's reserve).  On CPU it is the growth of
  the *process* peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the case: process-level and
  approximate (allocator caching, the import footprint, and — when several cases share one process — the
  high-water mark of earlier cases all blur it).  Run each case in a fresh process (``run_case_isolated``)
  for a meaningful number.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..models.task_models import TaskModel, build_task_model
from .complexity import count_gmacs

TASKS = ("pose", "cls", "seg")
MODES = ("train", "infer")
PRECISIONS = ("32", "bf16", "16")
TRAIN_FLOPS_FACTOR = 3
OCR_AUX_WEIGHT = 0.4

FLOPS_CONVENTION = ("MACs by FlopCounterMode on the meta device, batch 1 (conv/matmul/attention only); "
                    "FLOPs = 2 x MACs; a train step counts as 3 x forward FLOPs")
CUDA_MEM_NOTE = "growth of torch.cuda.max_memory_allocated over the case"
CPU_MEM_NOTE = "growth of process peak RSS (getrusage ru_maxrss) over the case: process-level, approximate"


# --------------------------------------------------------------------------------------------- parsing


def parse_input_size(text: str) -> tuple[int, int]:
    """``"256x192"`` -> (256, 192) (height x width); a single ``"224"`` means square."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise ValueError(f"bad input size {text!r}; expected HxW, e.g. 256x192 (or a single side, e.g. 224)")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h <= 0 or w <= 0:
        raise ValueError(f"bad input size {text!r}; height and width must be positive")
    return h, w


def autocast_dtype(precision: str) -> torch.dtype | None:
    """``"32"`` -> None (no autocast), ``"bf16"`` -> bfloat16, ``"16"`` -> float16."""
    table = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
    if precision not in table:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return table[precision]


def check_device_precision(device: str, precision: str) -> None:
    """Raise ``ValueError`` with a clear message for combinations that cannot run here."""
    autocast_dtype(precision)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available in this torch build / machine")
    if device == "cpu" and precision == "16":
        raise ValueError("precision 16 (float16 autocast) is not supported on CPU; use 32 or bf16")


# --------------------------------------------------------------------------------------------- models


def build_bench_model(name: str, task: str, impl: str = "fast") -> tuple[TaskModel, str]:
    """``build_task_model(name, task)``; returns the model and the attention implementation used.

    ``impl`` is passed to the backbone as ``attn_impl`` when the backbone accepts that option; backbones
    without it run their only implementation, reported as ``"-"``.
    """
    try:
        return build_task_model(name, task, attn_impl=impl), impl
    except TypeError as err:
        if "attn_impl" not in str(err):
            raise
        return build_task_model(name, task), "-"


# --------------------------------------------------------------------------------------------- timing


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], warmup: int, iters: int,
               device: str | torch.device) -> list[float]:
    """Run ``step`` ``warmup`` times untimed, then ``iters`` times timed; returns the per-step seconds.

    The device is synchronised before every clock read, so asynchronous CUDA work is included.
    """
    if iters < 1:
        raise ValueError("iters must be >= 1")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def ru_maxrss_mb() -> float:
    """Process peak RSS so far in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@contextlib.contextmanager
def track_peak_memory(device: str | torch.device) -> Iterator[dict]:
    """Yields a dict whose ``"peak_mem_mb"`` is filled on exit (see the module docstring for its meaning)."""
    dev = torch.device(device)
    out: dict = {}
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        yield out
        synchronize(dev)
        out["peak_mem_mb"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        base = ru_maxrss_mb()
        yield out
        out["peak_mem_mb"] = ru_maxrss_mb() - base


def matmul_gflops(device: str | torch.device, precision: str = "32", n: int = 2048, warmup: int = 2,
                  iters: int = 5) -> float:
    """Dense (n x n) @ (n x n) rate in GFLOP/s (median of ``iters``) in the compute dtype of ``precision``."""
    dtype = autocast_dtype(precision) or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_steps(lambda: torch.mm(a, b), warmup, iters, device)
    return 2 * n**3 / statistics.median(times) / 1e9


def machine_name(device: str | torch.device) -> str:
    """GPU name on CUDA, else the CPU model from /proc/cpuinfo (falling back to ``platform``)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------- cases


@dataclass
class BenchCase:
    """One measurement: a model, task and mode at a batch size, input size, device and precision."""

    model: str
    task: str = "pose"
    mode: str = "infer"
    height: int = 256
    width: int = 192
    batch: int = 8
    device: str = "cpu"
    precision: str = "32"
    threads: int | None = None
    channels_last: bool = False
    compile: bool = False
    warmup: int = 2
    iters: int = 5
    impl: str = "fast"
    seed: int = 0


def _loadavg() -> float | None:
    """1-minute system load average at the end of the case (a hint of CPU contention), None if unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _make_target(task: str, out: torch.Tensor | dict, batch: int, device: torch.device) -> torch.Tensor | dict:
    """Fixed random target for an output (labels for cls); a dict output (OCR head) gets one per key."""
    if isinstance(out, dict):
        return {k: _make_target(task, v, batch, device) for k, v in out.items()}
    if task == "cls":
        return torch.randint(0, out.shape[-1], (batch,), device=device)
    return torch.randn(out.shape, device=device, dtype=torch.float32)


def _loss_fn(task: str, out: torch.Tensor | dict, target: torch.Tensor | dict) -> torch.Tensor:
    if isinstance(out, dict):  # OCR head: main + auxiliary output, weighted as the official training
        return _loss_fn(task, out["out"], target["out"]) + OCR_AUX_WEIGHT * _loss_fn(task, out["aux"], target["aux"])
    if task == "cls":
        return F.cross_entropy(out.float(), target)
    return F.mse_loss(out.float(), target)


def run_case(case: BenchCase, matmul_rate: float | None = None) -> dict:
    """Measure ``case`` in this process and return a result row (see ``scripts/benchmark.py`` for the keys).

    Train step: ``zero_grad(set_to_none=True)``, forward, loss (MSE to a fixed random target of the output's
    shape; cross-entropy to fixed random labels for cls; the OCR head's ``out`` + 0.4 x ``aux``), backward,
    AdamW step (GradScaler for float16).
    Infer step: forward in ``eval()`` under ``torch.inference_mode()``.  ``matmul_rate`` (GFLOP/s) is the
    reference for ``fraction_of_matmul``; it is measured here when not given.
    """
    if case.mode not in MODES:
        raise ValueError(f"unknown mode {case.mode!r}; choose one of {', '.join(MODES)}")
    check_device_precision(case.device, case.precision)
    if case.threads is not None:
        torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = autocast_dtype(case.precision)
    amp = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
           else contextlib.nullcontext())
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    shape = (case.batch, 3, case.height, case.width)

    gmacs = count_gmacs(lambda: build_bench_model(case.model, case.task, case.impl)[0], tuple(shape[2:]))
    if matmul_rate is None:
        matmul_rate = matmul_gflops(device, case.precision)

    torch.manual_seed(case.seed)
    with track_peak_memory(device) as mem:
        model, impl = build_bench_model(case.model, case.task, case.impl)
        model = model.to(device=device, memory_format=memory_format)
        if case.compile:
            model.compile()
        x = torch.randn(shape, device=device).contiguous(memory_format=memory_format)

        if case.mode == "train":
            model.train()
            with torch.no_grad(), amp:
                probe = model(x)
            target = _make_target(case.task, probe, case.batch, device)
            del probe
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with amp:
                    out = model(x)
                loss = _loss_fn(case.task, out, target)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        else:
            model.eval()

            def step() -> None:
                with torch.inference_mode(), amp:
                    model(x)

        times = time_steps(step, case.warmup, case.iters, device)

    step_s = statistics.median(times)
    factor = TRAIN_FLOPS_FACTOR if case.mode == "train" else 1
    gflops_per_s = 2 * gmacs * case.batch * factor / step_s
    return {
        "model": case.model,
        "impl": impl,
        "task": case.task,
        "mode": case.mode,
        "device": case.device,
        "precision": case.precision,
        "batch": case.batch,
        "input": f"{case.height}x{case.width}",
        "channels_last": case.channels_last,
        "compile": case.compile,
        "img_per_s": case.batch / step_s,
        "step_s": step_s,
        "peak_mem_mb": mem["peak_mem_mb"],
        "gmacs_per_img": gmacs,
        "gflops_per_s": gflops_per_s,
        "matmul_gflops_per_s": matmul_rate,
        "fraction_of_matmul": gflops_per_s / matmul_rate,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": machine_name(device),
        "warmup": case.warmup,
        "iters": case.iters,
        "times_s": times,
        "loadavg_1m": _loadavg(),
        "notes": {
            "flops": FLOPS_CONVENTION,
            "peak_mem_mb": CUDA_MEM_NOTE if device.type == "cuda" else CPU_MEM_NOTE,
        },
    }


def _run_case_dict(case: dict, matmul_rate: float | None) -> dict:
    return run_case(BenchCase(**case), matmul_rate)


def run_case_isolated(case: BenchCase, matmul_rate: float | None = None) -> dict:
    """``run_case`` in a fresh spawned process, so peak memory (and allocator / thread state) is per case.

    Exceptions raised in the child are re-raised here.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_run_case_dict, asdict(case), matmul_rate).result()

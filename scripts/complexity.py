"""Parameters and compute of every registered backbone with its task head, at the papers' input sizes.

    python scripts/complexity.py                               # full table, writes docs/complexity.md
    python scripts/complexity.py --models hrformer_t --tasks pose --json /tmp/c.json

Counting: ``hrformer.utils.complexity.measure`` (``FlopCounterMode`` on the meta device, batch 1, eval,
no grad; GMACs = FLOPs / 2 / 1e9).  Each published number is shown next to ours converted to the
paper's own counting convention (see ``CONVENTIONS`` and the generated Markdown).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hrformer.models import backbone_family, list_backbones
from hrformer.models.task_models import TASKS, build_task_model, head_kind, supported_tasks
from hrformer.utils.complexity import Complexity, measure

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = REPO_ROOT / "docs" / "complexity.md"

INPUTS: dict[str, tuple[tuple[int, int], ...]] = {
    "cls": ((224, 224),),
    "pose": ((256, 192), (384, 288)),
    "seg": ((512, 1024), (1024, 2048)),
}

# Extra input sizes of one family's published table (UniFormer pose also reports 448x320).
EXTRA_INPUTS: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {("uniformer", "pose"): ((448, 320),)}

MODEL_ORDER = ("hrnet_w18_small_v1", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w32", "hrnet_w48",
               "hrformer_t", "hrformer_s", "hrformer_b",
               "naive_litehrnet_18", "wider_naive_litehrnet_18", "litehrnet_18", "litehrnet_30",
               "uniformer_s", "uniformer_s_plus", "uniformer_b")


@dataclass(frozen=True)
class Convention:
    """How a paper counted: label, description, our count converted to it (None: not reproducible), unit."""

    label: str
    description: str
    ours: Callable[[Complexity], float] | None
    unit: str = "G"


CONVENTIONS: dict[str, Convention] = {
    "hrnet": Convention(
        "MACs/2^30",
        "conv + linear multiply-adds divided by 1024^3 (HRNet repos' `get_model_summary`)",
        lambda c: c.gmacs_2_30),
    "hrformer-pose": Convention(
        "conv+qkv MACs/1e9",
        "convolution plus q/k/v projection multiply-adds / 1e9 "
        "(mmcv hook counter: no out_proj, no attention bmm)",
        lambda c: c.conv_qkv_gmacs),
    "fvcore": Convention(
        "fvcore FLOPs/1e9 (not reproduced)",
        "fvcore-style / 1e9: conv/linear/matmul multiply-adds plus norms, activations, element-wise ops "
        "(HRFormer `cls/tools/flop_count.py`); not reproduced", None),
    "torchstat": Convention(
        "torchstat Flops/2^20",
        "the `tools/torchstat` of HRNet/Lite-HRNet, total / 2^20 printed as \"M\": per leaf module, conv "
        "multiply-adds + conv-bias adds, BatchNorm (2 per element), ReLU and pooling elements, `nn.Upsample` "
        "output positions (B*H*W); a module called twice is counted once; functional ops are not seen",
        lambda c: c.torchstat_mflops, unit="M"),
    "uniformer": Convention(
        "MACs/1e9",
        "multiply-adds / 1e9 (UniFormer READMEs, to one decimal)",
        lambda c: c.gmacs),
}

# Published (paper / README) GFLOPs and parameters (M), keyed by (model, task, input).
# Sources: /work/shared/docs/hrformer-facts.md sections 4-5 and hrnet-family-facts.md section 3.
PUBLISHED: dict[tuple[str, str, str], dict] = {
    ("hrnet_w32", "pose", "256x192"): {"gflops": 7.1, "params_m": 28.5, "convention": "hrnet"},
    ("hrnet_w32", "pose", "384x288"): {"gflops": 16.0, "params_m": 28.5, "convention": "hrnet"},
    ("hrnet_w48", "pose", "256x192"): {"gflops": 14.6, "params_m": 63.6, "convention": "hrnet"},
    ("hrnet_w48", "pose", "384x288"): {"gflops": 32.9, "params_m": 63.6, "convention": "hrnet"},
    ("hrnet_w18_small_v1", "cls", "224x224"): {"gflops": 1.49, "params_m": 13.2, "convention": "hrnet"},
    ("hrnet_w18_small_v2", "cls", "224x224"): {"gflops": 2.42, "params_m": 15.6, "convention": "hrnet"},
    ("hrnet_w18", "cls", "224x224"): {"gflops": 3.99, "params_m": 21.3, "convention": "hrnet"},
    ("hrnet_w32", "cls", "224x224"): {"gflops": 8.31, "params_m": 41.2, "convention": "hrnet"},
    ("hrnet_w48", "cls", "224x224"): {"gflops": 16.1, "params_m": 77.5, "convention": "hrnet"},
    ("hrnet_w18_small_v1", "seg", "1024x2048"): {"gflops": 31.1, "params_m": 1.5, "convention": "hrnet"},
    ("hrnet_w18_small_v2", "seg", "1024x2048"): {"gflops": 71.6, "params_m": 3.9, "convention": "hrnet"},
    ("hrnet_w48", "seg", "1024x2048"): {"gflops": 696.2, "params_m": 65.8, "convention": "hrnet"},
    ("hrformer_t", "pose", "256x192"): {"gflops": 1.3, "params_m": 2.5, "convention": "hrformer-pose",
                                        "note": "paper only, unverified"},
    ("hrformer_s", "pose", "256x192"): {"gflops": 2.8, "params_m": 7.8, "convention": "hrformer-pose"},
    ("hrformer_s", "pose", "384x288"): {"gflops": 6.2, "params_m": 7.8, "convention": "hrformer-pose"},
    ("hrformer_b", "pose", "256x192"): {"gflops": 12.2, "params_m": 43.2, "convention": "hrformer-pose"},
    ("hrformer_b", "pose", "384x288"): {"gflops": 26.8, "params_m": 43.2, "convention": "hrformer-pose"},
    ("hrformer_t", "cls", "224x224"): {"gflops": 1.83, "params_m": 8.0, "convention": "fvcore"},
    ("hrformer_s", "cls", "224x224"): {"gflops": 3.56, "params_m": 13.5, "convention": "fvcore"},
    ("hrformer_b", "cls", "224x224"): {"gflops": 13.71, "params_m": 50.3, "convention": "fvcore"},
    # Lite-HRNet README (COCO val); "FLOPs" in M = torchstat total / 2^20
    ("naive_litehrnet_18", "pose", "256x192"): {"gflops": 194.8, "params_m": 0.7, "convention": "torchstat"},
    ("wider_naive_litehrnet_18", "pose", "256x192"): {"gflops": 311.1, "params_m": 1.3, "convention": "torchstat"},
    ("litehrnet_18", "pose", "256x192"): {"gflops": 205.2, "params_m": 1.1, "convention": "torchstat"},
    ("litehrnet_18", "pose", "384x288"): {"gflops": 461.6, "params_m": 1.1, "convention": "torchstat"},
    ("litehrnet_30", "pose", "256x192"): {"gflops": 319.2, "params_m": 1.8, "convention": "torchstat"},
    ("litehrnet_30", "pose", "384x288"): {"gflops": 717.8, "params_m": 1.8, "convention": "torchstat"},
    # UniFormer READMEs: image_classification (ImageNet-1K) and pose_estimation (COCO val, no params given)
    ("uniformer_s", "cls", "224x224"): {"gflops": 3.6, "params_m": 22, "convention": "uniformer"},
    ("uniformer_s_plus", "cls", "224x224"): {"gflops": 4.2, "params_m": 24, "convention": "uniformer"},
    ("uniformer_b", "cls", "224x224"): {"gflops": 8.3, "params_m": 50, "convention": "uniformer"},
    ("uniformer_s", "pose", "256x192"): {"gflops": 4.7, "params_m": None, "convention": "uniformer"},
    ("uniformer_s", "pose", "384x288"): {"gflops": 11.1, "params_m": None, "convention": "uniformer"},
    ("uniformer_s", "pose", "448x320"): {"gflops": 14.8, "params_m": None, "convention": "uniformer"},
    ("uniformer_b", "pose", "256x192"): {"gflops": 9.2, "params_m": None, "convention": "uniformer"},
    ("uniformer_b", "pose", "384x288"): {"gflops": 14.8, "params_m": None, "convention": "uniformer",
                                         "note": "README, likely a typo"},
    ("uniformer_b", "pose", "448x320"): {"gflops": 29.6, "params_m": None, "convention": "uniformer"},
}

COLUMNS = ("model", "task", "head", "input", "params (M)", "params", "GMACs (ours)",
           "ours, paper conv.", "paper FLOPs", "ours/paper", "paper params (M)", "paper convention")


def hw_str(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def ordered_models(selected: list[str] | None) -> list[str]:
    """Registered backbones in a readable order (HRNet, HRFormer, Lite-HRNet, UniFormer), optionally filtered."""
    registered = list_backbones()
    if selected:
        unknown = sorted(set(selected) - set(registered))
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(registered)}")
    names = [n for n in MODEL_ORDER if n in registered] + sorted(set(registered) - set(MODEL_ORDER))
    return [n for n in names if not selected or n in selected]


def measure_row(model: str, task: str, hw: tuple[int, int]) -> dict:
    """One result row: our counts and, where published, the paper's number in its convention."""
    c = measure(lambda: build_task_model(model, task), hw)
    row = {"model": model, "task": task, "input": hw_str(hw), "params": c.params, "gmacs": c.gmacs,
           "head": head_kind(model, task), "gmacs_2_30": c.gmacs_2_30, "conv_qkv_gmacs": c.conv_qkv_gmacs,
           "torchstat_mflops": c.torchstat_mflops}
    pub = PUBLISHED.get((model, task, row["input"]))
    if pub is not None:
        conv = CONVENTIONS[pub["convention"]]
        row["published"] = {**pub, "convention_label": conv.label, "convention_text": conv.description}
        row["ours_in_paper_convention"] = conv.ours(c) if conv.ours else None
    return row


def input_sizes(model: str, task: str) -> tuple[tuple[int, int], ...]:
    return INPUTS[task] + EXTRA_INPUTS.get((backbone_family(model), task), ())


def measure_all(models: list[str], tasks: list[str]) -> list[dict]:
    """Rows for every (task, model, input size) where the model has a published model for the task."""
    return [measure_row(m, t, hw) for t in tasks for m in models if t in supported_tasks(m)
            for hw in input_sizes(m, t)]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_cells(row: dict) -> list[str]:
    pub = row.get("published")
    note = f" ({pub['note']})" if pub and pub.get("note") else ""
    unit = f" {CONVENTIONS[pub['convention']].unit}" if pub else ""
    ours_conv = row.get("ours_in_paper_convention")
    ratio = f"{ours_conv / pub['gflops']:.3f}" if pub and ours_conv is not None else "—"
    params_m = pub.get("params_m") if pub else None
    return [
        row["model"], row["task"], row["head"], row["input"],
        f"{row['params'] / 1e6:.2f}", f"{row['params']:,}",
        _fmt(row["gmacs"]), (_fmt(ours_conv, 2 if unit == " M" else 3) + unit if ours_conv is not None else "—"),
        (f"{pub['gflops']}{unit}{note}" if pub else "—"), ratio, (f"{params_m:.1f}" if params_m is not None else "—"),
        (CONVENTIONS[pub["convention"]].label if pub else "—"),
    ]


def markdown_table(rows: list[dict]) -> str:
    """A column-aligned Markdown table (readable in a terminal as well)."""
    cells = [list(COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    right = {4, 5, 6, 7, 8, 9, 10}

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"

    rules = ("-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths))
    sep = "|" + "|".join(rules) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def conventions_section() -> str:
    lines = [
        "## Counting conventions", "",
        "- **GMACs (ours)**: `torch.utils.flop_counter.FlopCounterMode` total / 2 / 1e9, model and input "
        "on the `meta` device, batch 1, eval mode, no grad. It counts convolutions, linear layers and "
        "matrix products (including the attention `bmm`, which `scaled_dot_product_attention` decomposes "
        "into on `meta`), but no norms, activations, softmax, interpolation or element-wise ops.",
        "- **ours, paper conv.**: our count re-expressed in the convention of the published number:",
    ]
    lines += [f"  - `{conv.label}`: {conv.description}." for conv in CONVENTIONS.values()]
    lines += [
        "- HRNet's published \"GFLOPs\" are multiply-adds / 2^30; ours / 1.0737 reproduces them.",
        "- HRFormer pose (paper): the mmcv hook counter sees convolutions and the module-called q/k/v "
        "projections; the official code calls `out_proj` functionally and the attention products are not "
        "modules, so neither is counted. Counting conv bias additions as mmcv does adds 0.4-0.8%.",
        "- HRFormer classification (README): fvcore-style counting also charges norms, activations and "
        "element-wise ops, hence 1.83 G vs our 1.71 GMACs for HRFormer-T.",
        "- Heads: `hr-cls` = HRNet/HRFormer ImageNet head (1000 classes, depth-wise for HRFormer); "
        "`heatmap-1x1` = 1x1 conv to 17 joints on branch 0 of a backbone built with "
        "`multiscale_output=False`; `upsample-concat` = HRNetV2 head (19 Cityscapes classes); "
        "`ocr` = OCR head (19 classes). HRFormer's published segmentation models use OCR; where the row says "
        "`upsample-concat` for HRFormer, it is not the published model and no paper number is given.",
        "- HRNet pose is published for W32 and W48 only (the official pose code hard-codes the wide "
        "stage 1); the other HRNet pose rows keep each variant's own stage 1.",
        "- Published HRFormer pose parameters count the backbone only; ours include the 1x1 head "
        "(17·C1 + 17).",
        "- Lite-HRNet (pose only, as published): `heatmap-1x1` on the backbone's output (the iterative head's "
        "1/4 map). The paper's \"FLOPs\" are the torchstat total / 2^20 (M), reproduced exactly by "
        "`hrformer.utils.complexity.TorchstatCounter`; they undercount the real work because the official "
        "fusion calls each `fuse_layers[i][0]` twice (torchstat counts a module once) and skips functional ops "
        "(e.g. 0.242 GMACs against 205.2 M for Lite-HRNet-18 at 256x192).",
        "- UniFormer: `uniformer-cls` = BN + average pool + linear on stage 4 (1000 classes); `deconv-heatmap` = "
        "stage 4 + three 4x4 stride-2 deconvolutions (256 channels) + 1x1 to 17 joints, as its pose code; "
        "`semantic-fpn` = FPN neck (256) + Semantic FPN decoder (128), 19 classes here (the published ADE20K "
        "models have 150 classes: S 25.3 M parameters, 246.5 GMACs at 512x2048 against the README's 25M / 247G). "
        "The pose README gives no parameter counts; ours: backbone 21,033,280 (S) / 49,264,576 (B) with the "
        "official stage-output norms, head 4,200,209. Its 14.8G for UniFormer-B at 384x288 disagrees with the "
        "22.05 GMACs the official model computes (S at 448x320 is also 14.8G).",
    ]
    return "\n".join(lines)


def markdown_document(rows: list[dict], filters: str = "") -> str:
    return "\n".join([
        "# Model complexity", "",
        f"Generated by `python scripts/complexity.py{filters}`; do not edit by hand.",
        "", markdown_table(rows), "", conventions_section(), "",
    ])


def _filters(args: argparse.Namespace) -> str:
    """The row filters of this run as command-line options (for the generated document's header)."""
    out = f" --models {','.join(args.models)}" if args.models else ""
    return out + (f" --tasks {','.join(args.tasks)}" if tuple(args.tasks) != TASKS else "")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="comma-separated backbone names (default: all registered)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of cls,pose,seg")
    p.add_argument("--json", type=Path, help="write the rows as a JSON list to this path")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="Markdown output path")
    args = p.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        p.error(f"unknown task(s) {bad}; choose from {TASKS}")
    args.models = [m for m in args.models.split(",") if m] if args.models else None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    rows = measure_all(ordered_models(args.models), args.tasks)
    print(markdown_table(rows))
    print(f"\n{len(rows)} rows in {time.perf_counter() - start:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_document(rows, _filters(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Colour the semantic segmentation a trained checkpoint predicts on one image.

    python scripts/demo_seg.py --ckpt RUN_DIR/checkpoints/last.ckpt --image IMG.png --out OUT.png \\
        [--flip/--no-flip] [--scales 0.75 1.0 1.25] [--alpha 0.5] [--legend]

The model is rebuilt from the training run's ``config.yaml`` (two folders above the checkpoint, as for
``hrformer.eval``) and the checkpoint's ``state_dict`` is loaded strictly.  The image is prepared exactly as a
validation image of that run (rescaled to the long side ``data.val_base_size`` if set, ImageNet normalisation)
and predicted with the run's inference settings (whole image or sliding window; ``--scales`` / ``--flip``
override the test scales and the flip test); the class probabilities are resized to the image, and the output is
the image with the predicted class colours blended in (``--alpha``), same size as the input, with ``--legend``
a strip naming the classes present below it.  Prints the share of the image each predicted class covers.
Unreadable inputs: a message naming the file on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from hrformer.data.common import read_rgb, to_normalized_tensor
from hrformer.data.segmentation import resize_long_side
from hrformer.tasks.segmentation import resize_logits
from hrformer.utils.run import load_trained_module
from hrformer.visualize import seg_legend, seg_overlay


def load_run(ckpt: Path, device: str = "cpu"):
    """(module in eval mode with the checkpoint's weights, the training run's config)."""
    return load_trained_module(ckpt, {"task.task.table_file": None}, device)  # inference only: no table file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="Lightning checkpoint of a training run")
    parser.add_argument("--image", required=True, type=Path, help="input image")
    parser.add_argument("--out", required=True, type=Path, help="output PNG")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test (default: as the run's config)")
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="test scales (default: as the run's config)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    parser.add_argument("--legend", action="store_true", help="add a strip naming the predicted classes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    try:
        image = read_rgb(args.image)
        module, cfg = load_run(args.ckpt, args.device)
    except (OSError, ValueError) as err:
        print(f"demo_seg: error: {err}", file=sys.stderr)
        return 2

    task = module.task
    if args.flip is not None:
        task.flip = bool(args.flip)
    if args.scales:
        task.scales = [float(s) for s in args.scales]
    x = to_normalized_tensor(resize_long_side(image, cfg.data.get("val_base_size")))[None].to(args.device)
    with torch.inference_mode():
        probs = resize_logits(task.predict(module, x), image.shape[:2], task.align_corners)
    pred = probs[0].argmax(0).to(torch.uint8).cpu().numpy()

    canvas = seg_overlay(image, pred, task.palette, args.alpha)
    present, counts = np.unique(pred, return_counts=True)
    if args.legend:
        canvas = np.concatenate([canvas, seg_legend(present, task.class_names, task.palette, canvas.shape[1])])
    for c, n in sorted(zip(present, counts, strict=True), key=lambda t: -t[1]):
        print(f"{task.class_names[c]}: {100.0 * n / pred.size:.1f} %")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        print(f"demo_seg: error: cannot write {args.out}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(present)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Draw the poses a trained checkpoint predicts on one image.

    python scripts/demo_pose.py --ckpt RUN_DIR/checkpoints/last.ckpt --image IMG.jpg [--boxes BOXES.json] \\
        --out OUT.png [--flip/--no-flip] [--score-thr 0.3]

The model is rebuilt from the training run's ``config.yaml`` (two folders above the checkpoint, as for
``hrformer.eval``) and the checkpoint's ``state_dict`` is loaded strictly.  ``--boxes``: a json list of person
boxes ``[x, y, w, h]`` or of dicts with a ``"bbox"`` (e.g. COCO detection results: every entry is used, so
filter a results file to the image first); without it the whole image is one person box.  Each box is cropped
exactly as the validation datamodule does it, the heatmaps are decoded to image pixels and every skeleton is
drawn on the image (joints with a score above ``--score-thr``).  Prints one line per person with its mean
keypoint score.  Unreadable inputs: a message naming the file on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from hrformer.data.coco_keypoints import _clean_box, crop_and_normalize
from hrformer.data.common import read_rgb
from hrformer.data.geometry import box_to_center_size
from hrformer.utils.run import load_trained_module
from hrformer.visualize import draw_skeleton

BOX_COLOR = (255, 255, 255)


def load_module(ckpt: Path, device: str = "cpu"):
    """The training run's module (config from beside the checkpoint) with the checkpoint's weights, eval mode."""
    # inference only: no metric, no results file
    overrides = {"task.task.ann_file": None, "task.task.results_file": None}
    return load_trained_module(ckpt, overrides, device)[0]


def read_boxes(path: Path | None, width: int, height: int, min_score: float = 0.0) -> list[list[float]]:
    """Person boxes [x, y, w, h] from a json file (see the module docstring), or the whole image."""
    if path is None:
        return [[0.0, 0.0, float(width), float(height)]]
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read boxes from {path}: {err}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a json list of [x, y, w, h] boxes or of dicts with 'bbox'")
    boxes = []
    for entry in data:
        if isinstance(entry, dict):
            if entry.get("score", 1.0) < min_score:
                continue
            entry = entry.get("bbox")
        if not isinstance(entry, list | tuple) or len(entry) != 4:
            raise ValueError(f"{path}: not a box [x, y, w, h]: {entry!r}")
        boxes.append([float(v) for v in entry])
    return boxes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="Lightning checkpoint of a training run")
    parser.add_argument("--image", required=True, type=Path, help="input image")
    parser.add_argument("--boxes", type=Path, default=None, help="json person boxes (default: the whole image)")
    parser.add_argument("--out", required=True, type=Path, help="output PNG")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="flip test")
    parser.add_argument("--score-thr", type=float, default=0.3, help="draw joints scoring above this")
    parser.add_argument("--box-score-thr", type=float, default=0.0, help="skip detections scoring below this")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    try:
        image = read_rgb(args.image)
        height, width = image.shape[:2]
        boxes = read_boxes(args.boxes, width, height, args.box_score_thr)
        module = load_module(args.ckpt, args.device)
    except (OSError, ValueError) as err:
        print(f"demo_pose: error: {err}", file=sys.stderr)
        return 2

    task = module.task
    task.flip_test = bool(args.flip)
    input_size = tuple(task.codec.input_size)
    aspect = input_size[0] / input_size[1]
    people, crops = [], []
    for box in boxes:
        clean = _clean_box(box, width, height)
        if clean is None:
            print(f"skipped box {box}: empty after clipping to the image")
            continue
        center, size = box_to_center_size(clean, aspect, padding=1.25)
        people.append((clean, center, size))
        crops.append(crop_and_normalize(image, center, size, input_size))

    canvas = image.copy()
    if people:
        batch = {"center": torch.from_numpy(np.stack([p[1] for p in people]).astype(np.float32)),
                 "size": torch.from_numpy(np.stack([p[2] for p in people]).astype(np.float32))}
        with torch.inference_mode():
            heatmaps = task.predict_heatmaps(module, torch.stack(crops).to(args.device))
        keypoints, scores = task.decode(heatmaps, batch)
        for i, ((x, y, w, h), _, _) in enumerate(people):
            if args.boxes is not None:
                cv2.rectangle(canvas, (round(x), round(y)), (round(x + w), round(y + h)), BOX_COLOR, 1)
            canvas = draw_skeleton(canvas, keypoints[i], scores[i], thr=args.score_thr)
            print(f"person {i}: box [{x:.1f}, {y:.1f}, {w:.1f}, {h:.1f}] mean keypoint score {scores[i].mean():.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        print(f"demo_pose: error: cannot write {args.out}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(people)} people)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

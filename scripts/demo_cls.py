"""Print the top-5 classes a trained classification checkpoint predicts for one image.

    python scripts/demo_cls.py --ckpt RUN_DIR/checkpoints/best_epoch019.ckpt --image IMG.jpg [--topk 5]

The model is rebuilt from the training run's ``config.yaml`` (two folders above the checkpoint, as for
``hrformer.eval``) and the checkpoint's ``state_dict`` is loaded strictly; the class names are those the
checkpoint was trained with (saved in it).  The image is read as the validation data are (any format OpenCV
decodes; grayscale, alpha and CMYK converted to RGB) and goes through the validation resize and centre crop of
the run's datamodule.  Prints one line per class, best first: ``rank  probability  index  name``.
Unreadable inputs: a message naming the file on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from hrformer.data.common import read_rgb
from hrformer.utils.run import load_trained_module


def load_run(ckpt: Path, device: str = "cpu"):
    """(module in eval mode with the checkpoint's weights and class names, the run's datamodule, unset up)."""
    module, cfg = load_trained_module(ckpt, {"data.synthetic": None}, device)  # inference only: no data generation
    if not hasattr(module.task, "predict"):
        raise ValueError(f"{ckpt} is not a classification run (task {cfg.task.task._target_})")
    return module, instantiate(cfg.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="Lightning checkpoint of a classification run")
    parser.add_argument("--image", required=True, type=Path, help="input image")
    parser.add_argument("--topk", type=int, default=5, help="how many classes to print")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    try:
        image = read_rgb(args.image, ignore_orientation=True)  # as the ImageFolder loader
        module, datamodule = load_run(args.ckpt, args.device)
    except (OSError, ValueError) as err:
        print(f"demo_cls: error: {err}", file=sys.stderr)
        return 2
    task = module.task
    with torch.inference_mode():
        probs, indices = task.predict(module, datamodule.preprocess(image)[None].to(args.device), k=args.topk)
    print(f"{args.image} ({image.shape[1]}x{image.shape[0]}):")
    for rank, (p, i) in enumerate(zip(probs[0].tolist(), indices[0].tolist(), strict=True), start=1):
        print(f"{rank}  {p:.4f}  {i:4d}  {task.class_name(i)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

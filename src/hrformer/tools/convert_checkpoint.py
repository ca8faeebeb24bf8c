"""Convert an official HRNet / HRFormer / Lite-HRNet / UniFormer checkpoint into this repository's naming
(``hrformer-convert``, or ``python scripts/convert_checkpoint.py`` in a checkout).

    hrformer-convert hrt_small.pth official/hrformer_s_cls.pth --arch hrformer_s
    hrformer-convert pose_hrnet_w32_256x192.pth official/hrnet_w32_pose.pth --arch hrnet_w32
    hrformer-convert hrnet_w48_cityscapes_cls19_1024x2048_trainset.pth \
        official/hrnetv2_w48_cityscapes.pth --arch hrnet_w48
    hrformer-convert litehrnet_18_coco_256x192.pth official/litehrnet_18_pose.pth \
        --arch litehrnet_18
    hrformer-convert uniformer_small_in1k.pth official/uniformer_s_cls.pth --arch uniformer_s

Reads every official layout (``hrformer.models.convert``): deep-high-resolution-net pose, HRNet-Image-Classification
(``checkpoint.pth.tar`` too), HRNet-Semantic-Segmentation HRNetV2 and HRNet-OCR (``model.`` prefix, the criterion's
``loss.*`` buffer), HRFormer classification / pose / segmentation (``{'config_dict', 'state_dict': 'module.*'}``),
Lite-HRNet and UniFormer classification / pose / segmentation.

The output is ``{"state_dict": {"backbone.*": ..., "head.*": ...}, "hrformer": {...}}``: backbone keys in our names,
head keys (when the source has a head) under ``head.`` with the official head names, which our heads use, and the
detected layout (code base, task, ``backbone_options``, head kind and ``head_options``: what the model must be
built with to compute the official function; ``hrformer.models.task_models.build_from_layout`` builds it).  The
result is checked by loading it strictly into that model.  ``--backbone-only`` leaves the head out.
``module.init_checkpoint`` also takes the official file directly (it is converted on load).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hrformer.models import build_backbone, convert_official, list_backbones
from hrformer.models.task_models import build_from_layout


def read_checkpoint(src: Path) -> dict:
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"error: {src} does not exist") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise SystemExit(f"error: cannot read {src} as a torch checkpoint: {err}") from None


def check_loads(src: Path, arch: str, converted, backbone_only: bool) -> None:
    """Load strictly into the model of the detected layout; SystemExit naming the mismatching keys otherwise."""
    layout = converted.layout
    with torch.device("meta"):
        if layout.task is None or backbone_only:
            model, state = build_backbone(arch, **layout.backbone_options), converted.backbone
        else:
            num_classes = _num_classes(converted)
            model, state = build_from_layout(arch, layout, num_classes), converted.state_dict()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise SystemExit(
            f"error: {src} does not fit {arch} ({layout.code_base}, {layout.backbone_options}): {len(missing)} "
            f"missing keys (first: {missing[:3]}), {len(unexpected)} unexpected keys (first: {unexpected[:3]}), "
            f"{len(wrong_shape)} with other shapes (first: {wrong_shape[:3]}); is --arch right?")


def _num_classes(converted) -> int | None:
    """Classes / joints of the head: the out-channels of its last layer."""
    last = {"hr-cls": "classifier.weight", "uniformer-cls": "head.weight", "heatmap-1x1": "final_layer.weight",
            "deconv-heatmap": "final_layer.weight", "upsample-concat": "last_layer.3.weight",
            "ocr": "cls_head.weight", "hrnet-ocr": "cls_head.weight", "semantic-fpn": "decode_head.conv_seg.weight"}
    key = last.get(converted.layout.head)
    return converted.head[key].shape[0] if key in converted.head else None


def convert(src: Path, dst: Path, arch: str, window_size: int | None = None, backbone_only: bool = False,
            align_corners: bool | None = None) -> dict:
    try:
        converted = convert_official(read_checkpoint(src), arch, window_size=window_size, align_corners=align_corners)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"error: {src}: {err}") from None
    check_loads(src, arch, converted, backbone_only)
    layout = converted.layout
    meta = {"arch": arch, "source": str(src), **layout.as_dict(), "num_classes": _num_classes(converted),
            "head_keys": [] if backbone_only else sorted(converted.head), "dropped": converted.dropped}
    if backbone_only:
        meta.update(task=None, head=None, head_options={})
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": converted.state_dict(with_head=not backbone_only), "hrformer": meta}, dst)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="official checkpoint (.pth, .pth.tar)")
    parser.add_argument("dst", type=Path, help="converted checkpoint to write")
    parser.add_argument("--arch", required=True, choices=list_backbones(), help="backbone name")
    parser.add_argument("--window-size", type=int, default=None,
                        help="HRFormer: resize relative position bias tables to this window (e.g. 15 for seg)")
    parser.add_argument("--align-corners", choices=("true", "false"), default=None,
                        help="HRNet segmentation: override the detected interpolation (HRNetV2 files: false, "
                             "HRNet-OCR files: true)")
    parser.add_argument("--backbone-only", action="store_true",
                        help="write the backbone only (e.g. ImageNet weights to start a pose/seg model from)")
    args = parser.parse_args(argv)
    align = None if args.align_corners is None else args.align_corners == "true"
    meta = convert(args.src, args.dst, args.arch, args.window_size, args.backbone_only, align)
    heads = sorted({k.split(".")[0] for k in meta["head_keys"]})
    print(f"wrote {args.dst}: {args.arch} from {meta['code_base']} (task {meta['task']}), backbone "
          f"{meta['backbone_options']}, head {meta['head']} {meta['head_options']}, {len(meta['head_keys'])} head "
          f"tensors" + (f" ({', '.join(heads)})" if heads else "") + f", {len(meta['dropped'])} dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

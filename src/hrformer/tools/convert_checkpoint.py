"""Convert an official HRNet / HRFormer / Lite-HRNet / UniFormer checkpoint into this repository's naming
(``hrformer-convert``, or ``python scripts/convert_checkpoint.py`` in a checkout).

    hrformer-convert hrt_small.pth official/hrformer_s_cls.pth --arch hrformer_s
    hrformer-convert pose_hrnet_w32_256x192.pth official/hrnet_w32_pose.pth --arch hrnet_w32
    hrformer-convert litehrnet_18_coco_256x192.pth official/litehrnet_18_pose.pth \
        --arch litehrnet_18
    hrformer-convert uniformer_small_in1k.pth official/uniformer_s_cls.pth --arch uniformer_s

The output is ``{"state_dict": {"backbone.*": ..., "head.*": ...}, "hrformer": {...}}``: backbone keys in our
names, head keys (when the source has a head) under ``head.`` with the official head names, which our heads
use.  The backbone part is checked by loading it strictly into ``build_backbone(arch, ...)`` with the layout
options detected from the keys: single-output HRNet/HRFormer pose models (no stage-4 fusion rows 1..3);
UniFormer classification (``norm``/``head``, no stage-output norms: ``output_norms=False``), pose
(``keypoint_head``: ``multiscale_output=False``) or segmentation checkpoints.  ``--backbone-only`` leaves the
head out, e.g. to start a pose or segmentation model from ImageNet weights (``module.init_checkpoint``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hrformer.models import backbone_family, build_backbone, list_backbones, split_official_state_dict


def detect_multiscale(backbone_sd: dict) -> bool:
    """True when the last stage fuses every branch (cls/seg checkpoints), False for single-output pose ones."""
    fuse_keys = [k.split(".") for k in backbone_sd if k.startswith("stages.") and ".fuse_layers." in k]
    last = max((int(p[1]), int(p[2])) for p in fuse_keys)  # (stage, module) of the last module
    rows = {int(p[4]) for p in fuse_keys if (int(p[1]), int(p[2])) == last}
    return len(rows) > 1


def detect_options(arch: str, backbone_sd: dict, head_sd: dict) -> dict:
    """``build_backbone`` options under which the converted backbone keys load strictly (and the source's layout)."""
    family = backbone_family(arch)
    if family in ("hrnet", "hrformer"):
        return {"multiscale_output": detect_multiscale(backbone_sd)}
    if family == "uniformer":
        norms = any(k.startswith("norm1.") for k in backbone_sd)
        pose = any(k.startswith(("deconv_layers.", "final_layer.")) for k in head_sd)
        return {"output_norms": norms, "multiscale_output": norms and not pose}
    return {}  # Lite-HRNet: one key layout


def convert(src: Path, dst: Path, arch: str, window_size: int | None, backbone_only: bool = False) -> dict:
    try:
        checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"error: {src} does not exist") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one clear message
        raise SystemExit(f"error: cannot read {src} as a torch checkpoint: {err}") from None
    backbone_sd, head_sd = split_official_state_dict(checkpoint, arch, window_size)
    options = detect_options(arch, backbone_sd, head_sd)
    if backbone_only:
        head_sd = {}
    if window_size is not None:
        options["window_size"] = window_size
    model = build_backbone(arch, **options)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(backbone_sd))
    unexpected = sorted(set(backbone_sd) - set(expected))
    wrong_shape = [k for k in set(expected) & set(backbone_sd) if expected[k].shape != backbone_sd[k].shape]
    if missing or unexpected or wrong_shape:
        raise SystemExit(
            f"error: {src} does not fit {arch} {options}: {len(missing)} missing keys (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (first: {unexpected[:3]}), {len(wrong_shape)} with other shapes "
            f"(first: {sorted(wrong_shape)[:3]}); is --arch right?")
    model.load_state_dict(backbone_sd, strict=True)
    out = {f"backbone.{k}": v for k, v in backbone_sd.items()}
    out.update({f"head.{k}": v for k, v in head_sd.items()})
    meta = {"arch": arch, "source": str(src), "backbone_options": options, "head_keys": sorted(head_sd)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": out, "hrformer": meta}, dst)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="official checkpoint (.pth)")
    parser.add_argument("dst", type=Path, help="converted checkpoint to write")
    parser.add_argument("--arch", required=True, choices=list_backbones(), help="backbone name")
    parser.add_argument("--window-size", type=int, default=None,
                        help="HRFormer: resize relative position bias tables to this window (e.g. 15 for seg)")
    parser.add_argument("--backbone-only", action="store_true",
                        help="write the backbone only (e.g. ImageNet weights to start a pose/seg model from)")
    args = parser.parse_args(argv)
    meta = convert(args.src, args.dst, args.arch, args.window_size, args.backbone_only)
    heads = sorted({k.split(".")[0] for k in meta["head_keys"]})
    print(f"wrote {args.dst}: {args.arch} backbone {meta['backbone_options']}, "
          f"{len(meta['head_keys'])} head tensors" + (f" ({', '.join(heads)})" if heads else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

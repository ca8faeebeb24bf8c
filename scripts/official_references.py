#!/usr/bin/env python
"""Reference outputs of the official model code, for the equivalence tests (tests/models/test_official_equivalence.py).

    python scripts/official_references.py --checkout-root /tmp/official --out tests/reference/ [--only NAME ...]

Each reference builds an official model by importing its file unchanged from an extracted checkout of the official
repository, fills its state dict with the deterministic weights of ``hrformer.models.deterministic`` (a function of
each official key's name and shape; integer buffers keep the official values), runs a deterministic input in eval
mode (CPU, fp32) and writes ``OUT/NAME.pt`` with: the official key names, shapes and dtypes (``keys``), the input's
seed and shape, the outputs, and the provenance (repository, commit, file, class, config).  The weights themselves
are not stored: the tests regenerate them from the key list, convert them with our converter from the official
names, load them strictly into our model and compare the outputs.

Checkouts (``git archive`` of the snapshots; ``--checkout-root`` holds one folder per name):

    HRNet-Semantic-Segmentation-v1.1   HRNet/HRNet-Semantic-Segmentation, branch pytorch-v1.1 @ 88419ab
    HRNet-Semantic-Segmentation-OCR    HRNet/HRNet-Semantic-Segmentation, branch HRNet-OCR @ 0bbb288
    HRNet-Image-Classification         HRNet/HRNet-Image-Classification @ f760c98
    HRFormer                           HRNet/HRFormer @ 1245b88
    Lite-HRNet                         HRNet/Lite-HRNet @ 7b9049d
    UniFormer                          Sense-X/UniFormer @ 52a0415

The official files import third-party packages that are not installed or do not work with this torch (timm, mmcv,
mmpose, mmseg, torchvision, the openseg extensions); ``official_shims.py`` beside this script provides small
stand-ins for what they use (timm's DropPath / trunc_normal_ / to_2tuple included: timm does not work with this
torch).  Needs yacs, einops and PyYAML besides torch and numpy (``pip install yacs einops pyyaml`` in a scratch
environment; the project does not depend on them).  Quirks that need more than an import shim are listed on each
reference (``note``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import official_shims  # noqa: E402
from hrformer.models.deterministic import deterministic_input, deterministic_state_dict, state_dict_spec  # noqa: E402

COMMITS = {
    "HRNet-Semantic-Segmentation-v1.1": ("HRNet/HRNet-Semantic-Segmentation", "pytorch-v1.1 @ 88419ab"),
    "HRNet-Semantic-Segmentation-OCR": ("HRNet/HRNet-Semantic-Segmentation", "HRNet-OCR @ 0bbb288"),
    "HRNet-Image-Classification": ("HRNet/HRNet-Image-Classification", "master @ f760c98"),
    "HRFormer": ("HRNet/HRFormer", "main @ 1245b88"),
    "Lite-HRNet": ("HRNet/Lite-HRNet", "hrnet @ 7b9049d"),
    "UniFormer": ("Sense-X/UniFormer", "main @ 52a0415"),
}


@dataclass
class Reference:
    """One (family, task) reference: how to build the official model and what to record."""

    name: str
    family: str
    task: str
    arch: str  # our backbone name
    checkout: str  # folder under --checkout-root
    file: str  # the official model file, relative to the checkout
    config: str  # the official config it was built from
    build: Callable[[Path], nn.Module]  # checkout path -> official model (eval mode not yet set)
    input_shape: tuple[int, ...]
    outputs: Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
    convert: dict = field(default_factory=dict)  # what a user tells our converter (e.g. the source code base)
    num_classes: int | None = None
    note: str = ""
    input_seed: int = 0
    dtype: torch.dtype = torch.float32  # both sides compute in this dtype


@contextlib.contextmanager
def official_code(paths: list[Path], shims: tuple[str, ...] = ()):
    """Import from ``paths`` with the shims installed; afterwards forget every module imported meanwhile (the code
    bases reuse top-level names such as ``lib``, ``models`` and ``mmpose``)."""
    import numpy as np

    before = set(sys.modules)
    had_np_int = hasattr(np, "int")
    if not had_np_int:
        np.int = int  # HRNet-Semantic-Segmentation calls np.int (removed from numpy 1.24)
    sys.path[:0] = [str(p) for p in paths]
    official_shims.install(shims)
    try:
        yield
    finally:
        official_shims.uninstall()
        for p in paths:
            sys.path.remove(str(p))
        for name in set(sys.modules) - before:
            del sys.modules[name]
        if not had_np_int:
            del np.int


def load_file(name: str, path: Path):
    """Import one official file as module ``name`` (its package, for relative imports, must be in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def yacs_config(defaults, *yaml_files: Path, **overrides):
    cfg = defaults.clone()
    cfg.defrost()
    for f in yaml_files:
        cfg.merge_from_file(str(f))
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


# ----------------------------------------------------------------------------------------------- HRNet segmentation

def hrnet_seg(branch: str, yaml: str, align_corners: bool | None = None):
    def build(root: Path) -> nn.Module:
        lib = root / "lib"
        import config as cfg_pkg  # noqa: F401 - lib/config (yacs defaults of this branch)
        models = importlib.import_module("models.seg_hrnet")
        overrides = {"MODEL.PRETRAINED": ""}
        if align_corners is not None:
            overrides["MODEL.ALIGN_CORNERS"] = align_corners
        cfg = yacs_config(sys.modules["config"].config, lib.parent / yaml, **overrides)
        return models.get_seg_model(cfg)
    return build


def hrnet_seg_ocr(yaml: str):
    def build(root: Path) -> nn.Module:
        import config as cfg_pkg  # noqa: F401
        models = importlib.import_module("models.seg_hrnet_ocr")
        cfg = yacs_config(sys.modules["config"].config, root / yaml, **{"MODEL.PRETRAINED": ""})
        return models.get_seg_model(cfg)
    return build


def seg_logits(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"logits": model(x)}


def seg_ocr_logits(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    aux, out = model(x)
    return {"aux": aux, "out": out}


# ----------------------------------------------------------------------------------------------- HRNet classification

def hrnet_cls(yaml: str):
    def build(root: Path) -> nn.Module:
        import config as cfg_pkg  # noqa: F401
        models = importlib.import_module("models.cls_hrnet")
        cfg = yacs_config(sys.modules["config"].config, root / yaml)
        return models.get_cls_net(cfg)
    return build


def logits(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"logits": model(x)}


# ----------------------------------------------------------------------------------------------- HRFormer

def hrformer_cls(yaml: str):
    def build(root: Path) -> nn.Module:
        config = importlib.import_module("config")
        hrt = importlib.import_module("models.hrt")
        isa = sys.modules["models.modules.multihead_isa_attention"]
        # Quirk: PadBlock calls F.pad but the file never imports F (dead at 224x224 input, where no window needs
        # padding); give the module the name so that smaller inputs run.  The file itself is unchanged.
        isa.F = torch.nn.functional
        cfg = yacs_config(config._C, root / yaml)
        return hrt.HighResolutionTransformer(cfg.MODEL.HRT, num_classes=cfg.MODEL.NUM_CLASSES)
    return build


class Configer:
    """openseg's ``Configer.get(*keys)`` over a nested dict."""

    def __init__(self, tree: dict):
        self.tree = tree

    def get(self, *keys):
        node = self.tree
        for k in keys:
            node = node[k]
        return node

    def exists(self, *keys):
        try:
            self.get(*keys)
        except KeyError:
            return False
        return True


def hrformer_seg(net: str, backbone: str, num_classes: int):
    def build(root: Path) -> nn.Module:
        # BackboneSelector imports every backbone of openseg (ResNet, HRNet, Swin, ...) with their own dependencies;
        # a one-class stand-in selects the official HRT backbone as it does for "hrt*" names.
        hrt_backbone = importlib.import_module("lib.models.backbones.hrt.hrt_backbone")

        class BackboneSelector:
            def __init__(self, configer):
                self.configer = configer

            def get_backbone(self, **params):
                return hrt_backbone.HRTBackbone(self.configer)(**params)

        sys.modules["lib.models.backbones.backbone_selector"] = official_shims._module(
            "lib.models.backbones.backbone_selector", package=False, BackboneSelector=BackboneSelector)
        nets = importlib.import_module("lib.models.nets.hrt")
        configer = Configer({"data": {"num_classes": num_classes},
                             "network": {"backbone": backbone, "bn_type": "torchbn", "pretrained": None}})
        return getattr(nets, net)(configer)
    return build


# ----------------------------------------------------------------------------------------------- Lite-HRNet

def litehrnet(config: str):
    def build(root: Path) -> nn.Module:
        cfg = runpy.run_path(str(root / config))["model"]["backbone"]
        module = load_file("litehrnet_official", root / "models" / "backbones" / "litehrnet.py")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        return module.LiteHRNet(**kwargs)
    return build


def backbone_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x)
    out = out if isinstance(out, (list, tuple)) else [out]
    return {f"features.{i}": o for i, o in enumerate(out)}


# ----------------------------------------------------------------------------------------------- UniFormer

def uniformer_cls(variant: str, img_size: int):
    def build(root: Path) -> nn.Module:
        module = load_file("uniformer_cls_official", root / "image_classification" / "models" / "uniformer.py")
        return getattr(module, f"uniformer_{variant}")(img_size=img_size)
    return build


class TopDown(nn.Module):
    """mmpose's top-down model as far as its state dict and forward go: ``backbone`` -> ``keypoint_head``."""

    def __init__(self, backbone: nn.Module, keypoint_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.keypoint_head = keypoint_head

    def forward(self, x):
        return self.keypoint_head(self.backbone(x))


def uniformer_pose(config: str):
    """The pose backbone (mmpose fork) and the config's TopDownSimpleHead (the fork's keypoint_heads file)."""
    def build(root: Path) -> nn.Module:
        backbone = uniformer_downstream("mmpose", config)(root)
        cfg = runpy.run_path(str(root / "pose_estimation" / config))["model"]["keypoint_head"]
        heads = root / "pose_estimation" / "mmpose" / "models" / "keypoint_heads"
        load_file("mmpose.models.keypoint_heads.top_down_base_head", heads / "top_down_base_head.py")
        simple = load_file("mmpose.models.keypoint_heads.top_down_simple_head", heads / "top_down_simple_head.py")
        head = simple.TopDownSimpleHead(**{k: v for k, v in cfg.items() if k != "type"})
        return TopDown(backbone, head)
    return build


def heatmaps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"heatmaps": model(x)}


def uniformer_downstream(code: str, config: str):
    """The pose (mmpose fork) or segmentation (mmseg fork) backbone; ``code`` is the fork's package name."""
    def build(root: Path) -> nn.Module:
        folder = "pose_estimation" if code == "mmpose" else "semantic_segmentation"
        cfg = runpy.run_path(str(root / folder / config))["model"]["backbone"]
        module = load_file(f"{code}.models.backbones.uniformer",
                           root / folder / code / "models" / "backbones" / "uniformer.py")
        return module.UniFormer(**{k: v for k, v in cfg.items() if k not in ("type", "pretrained")})
    return build


SEG_V11 = "HRNet-Semantic-Segmentation-v1.1"
SEG_OCR = "HRNet-Semantic-Segmentation-OCR"
CITY = "experiments/cityscapes/"
REFERENCES = [
    Reference("hrnetv2_w18_small_v1_seg_v11", "hrnet", "seg", "hrnet_w18_small_v1", SEG_V11, "lib/models/seg_hrnet.py",
              CITY + "seg_hrnet_w18_small_v1_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
              hrnet_seg("v1.1", CITY + "seg_hrnet_w18_small_v1_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"),
              (2, 3, 72, 100), seg_logits, num_classes=19,
              note="pytorch-v1.1 branch: fusion and head upsample with F.upsample(mode='bilinear'), i.e. "
                   "align_corners=False, straight to the target size; odd input size so that the sizes do not "
                   "halve evenly"),
    Reference("hrnetv2_w48_seg_v11", "hrnet", "seg", "hrnet_w48", SEG_V11, "lib/models/seg_hrnet.py",
              CITY + "seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
              hrnet_seg("v1.1", CITY + "seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"),
              (1, 3, 64, 64), seg_logits, num_classes=19, note="pytorch-v1.1 branch (align_corners=False)"),
    Reference("hrnetv2_w48_seg_ocr_branch", "hrnet", "seg", "hrnet_w48", SEG_OCR, "lib/models/seg_hrnet.py",
              CITY + "seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
              hrnet_seg("OCR", CITY + "seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"),
              (1, 3, 72, 100), seg_logits, num_classes=19,
              note="HRNet-OCR branch, plain HRNetV2 with its released config (MODEL.ALIGN_CORNERS: False); "
                   "transitions of existing branches read y_list[i] (v1.1: y_list[-1]), the same for this config"),
    Reference("hrnetv2_w18_small_v1_seg_ocr_branch_align", "hrnet", "seg", "hrnet_w18_small_v1", SEG_OCR,
              "lib/models/seg_hrnet.py",
              "HRNet-Semantic-Segmentation-v1.1/" + CITY
              + "seg_hrnet_w18_small_v1_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml (+ MODEL.ALIGN_CORNERS True, "
                "the HRNet-OCR branch default)",
              hrnet_seg("OCR", "../" + SEG_V11 + "/" + CITY
                        + "seg_hrnet_w18_small_v1_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml", align_corners=True),
              (2, 3, 72, 100), seg_logits, num_classes=19, convert={"align_corners": True},
              note="HRNet-OCR branch seg_hrnet.py with ALIGN_CORNERS=True (the branch's default, used by its OCR "
                   "configs): bilinear align_corners=True in fusion and head"),
    Reference("hrnet_w48_ocr_seg", "hrnet", "seg", "hrnet_w48", SEG_OCR, "lib/models/seg_hrnet_ocr.py",
              CITY + "seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
              hrnet_seg_ocr(CITY + "seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"),
              (1, 3, 64, 64), seg_ocr_logits, num_classes=19,
              note="HRNet + OCR (ALIGN_CORNERS default True); outputs at 1/4 of the input"),
    Reference("hrnet_w18_cls", "hrnet", "cls", "hrnet_w18", "HRNet-Image-Classification", "lib/models/cls_hrnet.py",
              "experiments/cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml",
              hrnet_cls("experiments/cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml"), (2, 3, 64, 64), logits),
    *[Reference(f"hrnet_{w}_cls", "hrnet", "cls", f"hrnet_{w}", "HRNet-Image-Classification", "lib/models/cls_hrnet.py",
                f"experiments/cls_hrnet_{w}_sgd_lr5e-2_wd1e-4_bs32_x100.yaml",
                hrnet_cls(f"experiments/cls_hrnet_{w}_sgd_lr5e-2_wd1e-4_bs32_x100.yaml"), (1, 3, 64, 64), logits)
      for w in ("w32", "w48")],
    *[Reference(f"hrformer_{v}_cls", "hrformer", "cls", f"hrformer_{v}", "HRFormer", "cls/models/hrt.py",
                f"cls/configs/hrt/hrt_{size}.yaml", hrformer_cls(f"cls/configs/hrt/hrt_{size}.yaml"), shape, logits,
                note="PadBlock's missing `F` import supplied (the file's bug; dead at 224x224)")
      for v, size, shape in (("t", "tiny", (2, 3, 64, 64)), ("s", "small", (1, 3, 64, 64)),
                             ("b", "base", (1, 3, 32, 32)))],
    Reference("hrformer_s_seg_ocr", "hrformer", "seg", "hrformer_s", "HRFormer", "seg/lib/models/nets/hrt.py",
              "seg/lib/models/backbones/hrt/hrt_config.py MODEL_CONFIGS['hrt_small'], HRT_SMALL_OCR_V2, bn_type "
              "torchbn", hrformer_seg("HRT_SMALL_OCR_V2", "hrt_small", 19), (1, 3, 40, 40), seg_ocr_logits,
              num_classes=19, note="outputs upsampled to the input size (bilinear, align_corners=True) by the "
                                   "official net"),
    Reference("litehrnet_30_pose", "litehrnet", "pose", "litehrnet_30", "Lite-HRNet", "models/backbones/litehrnet.py",
              "configs/top_down/lite_hrnet/coco/litehrnet_30_coco_256x192.py",
              litehrnet("configs/top_down/lite_hrnet/coco/litehrnet_30_coco_256x192.py"), (1, 3, 128, 96),
              backbone_maps, dtype=torch.float64,
              note="backbone (the 1x1 keypoint head is mmpose's TopDownSimpleHead, not in the repo); computed in "
                   "float64: with these weights the 14 modules' doubled branch-0 fusion makes the output "
                   "ill-conditioned in float32 (float32 and float64 differ by 0.9% of the output scale)"),
    *[Reference(f"uniformer_{v}_cls", "uniformer", "cls", f"uniformer_{v}", "UniFormer",
                "image_classification/models/uniformer.py", f"uniformer_{variant}(img_size=64)",
                uniformer_cls(variant, 64), (n, 3, 64, 64), logits,
                note="img_size=64 so that PatchEmbed's size assert accepts the small input")
      for v, variant, n in (("s", "small", 2), ("b", "base", 1))],
    Reference("uniformer_s_pose", "uniformer", "pose", "uniformer_s", "UniFormer",
              "pose_estimation/mmpose/models/backbones/uniformer.py",
              "pose_estimation/exp/top_down_256x192_global_small/config.py",
              uniformer_pose("exp/top_down_256x192_global_small/config.py"), (1, 3, 128, 96), heatmaps,
              num_classes=17, note="mmpose TopDown: the fork's UniFormer backbone (stage 4 through norm4) and its "
                                   "TopDownSimpleHead (3 deconvolutions, SyncBN built as BatchNorm on CPU, 1x1 conv); "
                                   "keys with the backbone. / keypoint_head. prefixes of mmpose checkpoints"),
]


def seg_config_for_uniformer(root: Path) -> str | None:
    """The Semantic FPN UniFormer-S config of the segmentation fork, when present."""
    hits = sorted((root / "semantic_segmentation").glob("exp/fpn_global_small/config.py"))
    return str(hits[0].relative_to(root / "semantic_segmentation")) if hits else None


def shims_for(ref: Reference) -> tuple[str, ...]:
    return {"HRFormer": ("timm", "torchvision"), "Lite-HRNet": ("mmcv", "mmpose"),
            "UniFormer": ("timm", "mmcv", "mmpose", "mmseg")}.get(ref.checkout, ())


def import_paths(ref: Reference, root: Path) -> list[Path]:
    if ref.checkout == "HRFormer":
        return [root / "cls"] if ref.task == "cls" else [root / "seg"]
    if ref.checkout.startswith(("HRNet-Semantic", "HRNet-Image")):
        return [root / "lib"]
    return [root]


def make_reference(ref: Reference, checkout_root: Path) -> dict:
    root = checkout_root / ref.checkout
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is missing: extract {COMMITS[ref.checkout][0]} there")
    torch.manual_seed(0)
    with official_code(import_paths(ref, root), shims_for(ref)):
        model = ref.build(root)
        official = model.state_dict()
        weights = deterministic_state_dict({k: v for k, v in official.items() if v.is_floating_point()})
        model.load_state_dict({**official, **weights}, strict=True)
        model.eval()  # (the official LiteHRNet.train returns None: no chaining)
        model.to(ref.dtype)
        x = deterministic_input(ref.input_seed, ref.input_shape).to(ref.dtype)
        with torch.no_grad():
            outputs = {k: v.detach().float() for k, v in ref.outputs(model, x).items()}
    repo, commit = COMMITS[ref.checkout]
    return {
        "name": ref.name, "family": ref.family, "task": ref.task, "arch": ref.arch, "num_classes": ref.num_classes,
        "convert": ref.convert, "keys": state_dict_spec(official), "weight_seed": 0,
        "input_seed": ref.input_seed, "input_shape": tuple(ref.input_shape), "outputs": outputs,
        "dtype": str(ref.dtype).removeprefix("torch."),
        "official": {"repository": repo, "commit": commit, "file": ref.file, "config": ref.config},
        "note": ref.note, "torch": str(torch.__version__),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout-root", type=Path, required=True, help="folder with the extracted checkouts")
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME.pt")
    parser.add_argument("--only", nargs="*", help="names of the references to make (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = {r.name for r in REFERENCES}
    unknown = set(args.only or ()) - names
    if unknown:
        parser.error(f"unknown reference(s) {sorted(unknown)}; known: {sorted(names)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for ref in REFERENCES:
        if args.only and ref.name not in args.only:
            continue
        data = make_reference(ref, args.checkout_root)
        path = args.out / f"{ref.name}.pt"
        torch.save(data, path)
        shapes = {k: tuple(v.shape) for k, v in data["outputs"].items()}
        print(f"{path}: {len(data['keys'])} keys, outputs {shapes}, {path.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

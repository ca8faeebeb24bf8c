"""Tiny stand-ins for the third-party packages the official model files import (used by official_references.py).

The official files are imported unchanged; what they import from timm, mmcv, mmpose, mmseg, torchvision and the
openseg helpers is provided here, written from those libraries' documented behaviour (nothing is copied):

- timm: ``DropPath`` (identity in eval mode, which is all the references run), ``trunc_normal_``, ``to_2tuple``,
  ``register_model``, ``_cfg``.  timm itself does not work with this torch, hence the shim.
- mmcv: ``ConvModule`` (conv -> norm -> activation; ``bias='auto'`` means a bias exactly when there is no norm;
  the norm is registered as ``bn`` for BatchNorm, as ``build_norm_layer`` names it), ``DepthwiseSeparableConvModule``
  (``depthwise_conv`` + ``pointwise_conv`` ConvModules; ``dw_act_cfg`` / ``pw_act_cfg`` default to ``act_cfg``),
  ``build_conv_layer``, ``build_norm_layer``, the ``*_init`` helpers, ``_BatchNorm``.
- mmpose / mmseg: a no-op registry, ``get_root_logger``, ``channel_shuffle`` (ShuffleNet's), ``load_checkpoint``.
- torchvision: ``load_state_dict_from_url`` (never called: no weights are downloaded).

``install(names)`` puts the modules into ``sys.modules``; ``uninstall()`` removes them again.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterable

import torch
from torch import nn


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class DropPath(nn.Module):
    """timm's stochastic depth; the references run in eval mode, where it is the identity."""

    def __init__(self, drop_prob: float | None = None):
        super().__init__()
        self.drop_prob = drop_prob or 0.0

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)


def register_model(fn):
    return fn


def _cfg(url: str = "", **kwargs) -> dict:
    return {"url": url, **kwargs}


class Registry:
    def __init__(self, name: str = ""):
        self.name = name
        self.modules: dict[str, type] = {}

    def register_module(self, name=None, force=False, module=None):
        def register(cls):
            self.modules[cls.__name__] = cls
            return cls
        return register(module) if module is not None else register


def get_root_logger(*args, **kwargs):
    return logging.getLogger("official")


def load_checkpoint(*args, **kwargs):
    raise RuntimeError("the references never load official weights")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)


# ------------------------------------------------------------------------------ mmcv.cnn

_RELU = {"type": "ReLU"}  # mmcv's default activation (never mutated)
_NORMS = {"BN": ("bn", nn.BatchNorm2d), "SyncBN": ("bn", nn.BatchNorm2d), "GN": ("gn", nn.GroupNorm),
          "LN": ("ln", nn.LayerNorm), "IN": ("in", nn.InstanceNorm2d)}
_ACTS = {"ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "GELU": nn.GELU, "HSigmoid": nn.Hardsigmoid}


def build_conv_layer(cfg, *args, **kwargs) -> nn.Module:
    kind = (cfg or {"type": "Conv2d"}).get("type", "Conv2d")
    if kind not in ("Conv", "Conv2d"):
        raise NotImplementedError(kind)
    return nn.Conv2d(*args, **kwargs)


def build_norm_layer(cfg: dict, num_features: int, postfix="") -> tuple[str, nn.Module]:
    cfg = dict(cfg)
    kind = cfg.pop("type")
    cfg.pop("requires_grad", None)
    abbr, cls = _NORMS[kind]
    layer = cls(cfg.pop("num_groups"), num_features, **cfg) if kind == "GN" else cls(num_features, **cfg)
    return f"{abbr}{postfix}", layer


def build_activation_layer(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    cls = _ACTS[cfg.pop("type")]
    if cls is not nn.ReLU:
        cfg.pop("inplace", None)
    return cls(**cfg)


class ConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias="auto", conv_cfg=None, norm_cfg=None, act_cfg=_RELU, inplace=True,
                 order=("conv", "norm", "act"), **kwargs):
        super().__init__()
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        bias = not self.with_norm if bias == "auto" else bias
        self.order = order
        self.conv = build_conv_layer(conv_cfg, in_channels, out_channels, kernel_size, stride=stride,
                                     padding=padding, dilation=dilation, groups=groups, bias=bias)
        if self.with_norm:
            norm_channels = out_channels if order.index("norm") > order.index("conv") else in_channels
            self.norm_name, norm = build_norm_layer(norm_cfg, norm_channels)
            self.add_module(self.norm_name, norm)
        if self.with_activation:
            act = dict(act_cfg)
            if act["type"] == "ReLU":
                act.setdefault("inplace", inplace)
            self.activate = build_activation_layer(act)

    @property
    def norm(self):
        return getattr(self, self.norm_name)

    def forward(self, x, activate=True, norm=True):
        for layer in self.order:
            if layer == "conv":
                x = self.conv(x)
            elif layer == "norm" and norm and self.with_norm:
                x = self.norm(x)
            elif layer == "act" and activate and self.with_activation:
                x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, norm_cfg=None,
                 act_cfg=_RELU, dw_norm_cfg="default", dw_act_cfg="default", pw_norm_cfg="default",
                 pw_act_cfg="default", **kwargs):
        super().__init__()
        dw_norm_cfg = norm_cfg if dw_norm_cfg == "default" else dw_norm_cfg
        dw_act_cfg = act_cfg if dw_act_cfg == "default" else dw_act_cfg
        pw_norm_cfg = norm_cfg if pw_norm_cfg == "default" else pw_norm_cfg
        pw_act_cfg = act_cfg if pw_act_cfg == "default" else pw_act_cfg
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                         dilation=dilation, groups=in_channels, norm_cfg=dw_norm_cfg,
                                         act_cfg=dw_act_cfg, **kwargs)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, norm_cfg=pw_norm_cfg, act_cfg=pw_act_cfg,
                                         **kwargs)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


def build_upsample_layer(cfg: dict, *args, **kwargs) -> nn.Module:
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind != "deconv":
        raise NotImplementedError(kind)
    return nn.ConvTranspose2d(*args, **cfg, **kwargs)


def constant_init(module, val, bias=0):
    if getattr(module, "weight", None) is not None:
        nn.init.constant_(module.weight, val)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def normal_init(module, mean=0, std=1, bias=0):
    if getattr(module, "weight", None) is not None:
        nn.init.normal_(module.weight, mean, std)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def kaiming_init(module, *args, **kwargs):
    nn.init.kaiming_normal_(module.weight)


# ------------------------------------------------------------------------------ module tables

def _module(name: str, package: bool = True, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    if package:
        mod.__path__ = []  # a package, so that submodules (and relative imports) resolve
    mod.__dict__.update(attrs)
    return mod


def _timm() -> dict[str, types.ModuleType]:
    layers = dict(DropPath=DropPath, trunc_normal_=trunc_normal_, to_2tuple=to_2tuple)
    return {"timm": _module("timm"), "timm.models": _module("timm.models"),
            "timm.models.layers": _module("timm.models.layers", **layers),
            "timm.models.registry": _module("timm.models.registry", register_model=register_model),
            "timm.models.vision_transformer": _module("timm.models.vision_transformer", _cfg=_cfg)}


def _mmcv() -> dict[str, types.ModuleType]:
    from torch.nn.modules.batchnorm import _BatchNorm
    cnn = dict(ConvModule=ConvModule, DepthwiseSeparableConvModule=DepthwiseSeparableConvModule,
               build_conv_layer=build_conv_layer, build_norm_layer=build_norm_layer,
               build_activation_layer=build_activation_layer, build_upsample_layer=build_upsample_layer,
               constant_init=constant_init, normal_init=normal_init,
               kaiming_init=kaiming_init)
    def is_tuple_of(seq, expected_type) -> bool:
        return isinstance(seq, tuple) and all(isinstance(item, expected_type) for item in seq)

    return {"mmcv": _module("mmcv", is_tuple_of=is_tuple_of), "mmcv.cnn": _module("mmcv.cnn", **cnn),
            "mmcv.runner": _module("mmcv.runner", load_checkpoint=load_checkpoint),
            "mmcv.runner.checkpoint": _module("mmcv.runner.checkpoint", load_state_dict=load_checkpoint),
            "mmcv.utils": _module("mmcv.utils"),
            "mmcv.utils.parrots_wrapper": _module("mmcv.utils.parrots_wrapper", _BatchNorm=_BatchNorm),
            "mmcv_custom": _module("mmcv_custom", load_checkpoint=load_checkpoint)}


def _openmmlab(pkg: str) -> dict[str, types.ModuleType]:
    """``mmpose`` or ``mmseg``: registries, logger, the backbone utilities and the names the heads import (the
    evaluation and loss helpers are never called by a forward pass: ``None``)."""
    registry = Registry()
    unused = dict(pose_pck_accuracy=None, flip_back=None, keypoints_from_heatmaps=None)
    return {pkg: _module(pkg), f"{pkg}.utils": _module(f"{pkg}.utils", get_root_logger=get_root_logger),
            f"{pkg}.core": _module(f"{pkg}.core"),
            f"{pkg}.core.evaluation": _module(f"{pkg}.core.evaluation", **unused),
            f"{pkg}.core.evaluation.top_down_eval": _module(f"{pkg}.core.evaluation.top_down_eval", **unused),
            f"{pkg}.core.post_processing": _module(f"{pkg}.core.post_processing", **unused),
            f"{pkg}.models.utils": _module(f"{pkg}.models.utils"),
            f"{pkg}.models.utils.ops": _module(f"{pkg}.models.utils.ops", resize=None),
            f"{pkg}.models.keypoint_heads": _module(f"{pkg}.models.keypoint_heads"),
            f"{pkg}.models": _module(f"{pkg}.models"),
            f"{pkg}.models.registry": _module(f"{pkg}.models.registry", BACKBONES=registry, HEADS=registry),
            f"{pkg}.models.builder": _module(f"{pkg}.models.builder", BACKBONES=registry, HEADS=registry,
                                             build_loss=lambda cfg: None),
            f"{pkg}.models.backbones": _module(f"{pkg}.models.backbones"),
            f"{pkg}.models.backbones.resnet": _module(f"{pkg}.models.backbones.resnet", BasicBlock=None,
                                                      Bottleneck=None),
            f"{pkg}.models.backbones.utils": _module(f"{pkg}.models.backbones.utils", load_checkpoint=load_checkpoint,
                                                     channel_shuffle=channel_shuffle)}


def _torchvision() -> dict[str, types.ModuleType]:
    return {"torchvision": _module("torchvision"), "torchvision.models": _module("torchvision.models"),
            "torchvision.models.utils": _module("torchvision.models.utils", load_state_dict_from_url=load_checkpoint)}


SHIMS = {"timm": _timm, "mmcv": _mmcv, "mmpose": lambda: _openmmlab("mmpose"), "mmseg": lambda: _openmmlab("mmseg"),
         "torchvision": _torchvision}
_installed: list[str] = []


def install(names: Iterable[str]) -> None:
    for name in names:
        for mod_name, mod in SHIMS[name]().items():
            sys.modules[mod_name] = mod
            _installed.append(mod_name)


def uninstall() -> None:
    while _installed:
        sys.modules.pop(_installed.pop(), None)

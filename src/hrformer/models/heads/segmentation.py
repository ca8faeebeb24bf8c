"""Segmentation heads on the multi-resolution representation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import ConvBNAct, bn


def concat_branches(features: list[torch.Tensor], align_corners: bool = True) -> torch.Tensor:
    """HRNetV2 representation: upsample every branch bilinearly to branch 0 and concatenate.

    [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)] -> (B, C1 + ... + C4, H/4, W/4).
    """
    size = features[0].shape[-2:]
    ups = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=align_corners)
                           for f in features[1:]]
    return torch.cat(ups, dim=1)


class UpsampleConcatHead(nn.Module):
    """HRNetV2 segmentation head: concat branches, conv1x1-BN-ReLU, conv1x1 to classes.

    Output logits at 1/4 resolution (B, num_classes, H/4, W/4); ``last_layer`` is named as in the
    official HRNet-Semantic-Segmentation code.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, align_corners: bool = True):
        super().__init__()
        c = sum(in_channels)
        self.align_corners = align_corners
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=True), bn(c), nn.ReLU(inplace=True), nn.Conv2d(c, num_classes, 1, bias=True))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.last_layer(concat_branches(features, self.align_corners))


# ---------------------------------------------------------------------------------------------------------
# OCR head (object-contextual representations), as used for every HRFormer segmentation result.
# Layout, channel sizes, bias flags and module names follow the official HRFormer seg code (an openseg
# fork): ``seg/lib/models/nets/hrt.py::HRT_{SMALL,BASE}_OCR_V2`` and
# ``seg/lib/models/modules/spatial_ocr_block.py``, so an official state dict (``module.`` stripped,
# ``backbone.*`` keys removed) loads with ``strict=True``.
# ---------------------------------------------------------------------------------------------------------


def bn_relu(channels: int) -> nn.Sequential:
    """openseg ``ModuleHelper.BNReLU``: ``Sequential(BatchNorm2d, ReLU)`` (keys ``<i>.0.*``)."""
    return nn.Sequential(bn(channels), nn.ReLU())


class SpatialGather(nn.Module):
    """Soft object regions -> object (class) centres; official ``SpatialGather_Module``.

    ``feats`` (B, C, H, W) and region logits ``probs`` (B, K, H, W): softmax of ``scale * probs`` over the
    H*W pixels of each region k, then the weighted sum of the pixel features.  Returns (B, C, K, 1).
    No parameters.
    """

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        b, c = feats.shape[:2]
        k = probs.shape[1]
        weights = F.softmax(self.scale * probs.reshape(b, k, -1), dim=2)     # (B, K, HW)
        centres = torch.matmul(weights, feats.reshape(b, c, -1).transpose(1, 2))  # (B, K, C)
        return centres.transpose(1, 2).unsqueeze(3)                         # (B, C, K, 1)


class ObjectAttention(nn.Module):
    """Pixel-to-object attention; official ``_ObjectAttentionBlock`` / ``ObjectAttentionBlock2D``.

    - query ``f_pixel(x)``: 2 x (conv1x1 + BNReLU), C -> Ck -> Ck, on the pixels (B, C, H, W);
    - key ``f_object(proxy)``: 2 x (conv1x1 + BNReLU), C -> Ck -> Ck, on the object centres (B, C, K, 1);
    - value ``f_down(proxy)``: conv1x1 + BNReLU, C -> Ck;
    - ``softmax(Ck^-0.5 * q k^T)`` over the K objects, weighted sum of values, then ``f_up``:
      conv1x1 + BNReLU, Ck -> C.

    All convolutions have a bias (HRFormer's openseg code; ``bias=False``: HRNet-OCR's).  With ``scale > 1`` the
    pixels are max-pooled first and the context is upsampled back (bilinear, align_corners=True), as in the official
    code.  Returns (B, C, H, W).
    """

    def __init__(self, in_channels: int, key_channels: int, scale: int = 1, bias: bool = True):
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.pool = nn.MaxPool2d(kernel_size=(scale, scale))
        self.f_pixel = nn.Sequential(
            nn.Conv2d(in_channels, key_channels, 1, bias=bias), bn_relu(key_channels),
            nn.Conv2d(key_channels, key_channels, 1, bias=bias), bn_relu(key_channels))
        self.f_object = nn.Sequential(
            nn.Conv2d(in_channels, key_channels, 1, bias=bias), bn_relu(key_channels),
            nn.Conv2d(key_channels, key_channels, 1, bias=bias), bn_relu(key_channels))
        self.f_down = nn.Sequential(nn.Conv2d(in_channels, key_channels, 1, bias=bias), bn_relu(key_channels))
        self.f_up = nn.Sequential(nn.Conv2d(key_channels, in_channels, 1, bias=bias), bn_relu(in_channels))

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        if self.scale > 1:
            x = self.pool(x)
        hp, wp = x.shape[2], x.shape[3]
        query = self.f_pixel(x).reshape(b, self.key_channels, -1).transpose(1, 2)   # (B, HW, Ck)
        key = self.f_object(proxy).reshape(b, self.key_channels, -1)                # (B, Ck, K)
        value = self.f_down(proxy).reshape(b, self.key_channels, -1).transpose(1, 2)  # (B, K, Ck)
        sim = F.softmax(self.key_channels ** -0.5 * torch.matmul(query, key), dim=-1)  # (B, HW, K)
        context = torch.matmul(sim, value).transpose(1, 2).reshape(b, self.key_channels, hp, wp)
        context = self.f_up(context)                                                # (B, C, H', W')
        if self.scale > 1:
            context = F.interpolate(context, size=(h, w), mode="bilinear", align_corners=True)
        return context


class SpatialOCR(nn.Module):
    """Object-contextual representation; official ``SpatialOCR_Module``.

    ``object_context_block`` (:class:`ObjectAttention`) gives the context (B, C, H, W); it is concatenated
    *before* the input features, then ``conv_bn_dropout`` = conv1x1 (2C -> out, bias) + BNReLU + Dropout2d.
    (B, C, H, W), (B, C, K, 1) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, scale: int = 1,
                 dropout: float = 0.1, bias: bool = True):
        super().__init__()
        self.object_context_block = ObjectAttention(in_channels, key_channels, scale, bias)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, 1, bias=bias), bn_relu(out_channels), nn.Dropout2d(dropout))

    def forward(self, feats: torch.Tensor, proxy_feats: torch.Tensor) -> torch.Tensor:
        context = self.object_context_block(feats, proxy_feats)
        return self.conv_bn_dropout(torch.cat([context, feats], dim=1))


class OCRHead(nn.Module):
    """HRFormer segmentation head (HRNetV2 concat + OCR); official ``HRT_{SMALL,BASE}_OCR_V2`` minus backbone.

    Input: the backbone's branches [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)]; they are upsampled
    bilinearly (``align_corners``) to branch 0 and concatenated: (B, C, H/4, W/4), C = sum(in_channels)
    (480 for HRFormer-S, 1170 for HRFormer-B).

    - ``aux_head``: conv3x3 (C -> mid, bias) + BNReLU + conv1x1 (mid -> classes, bias): soft object regions;
    - ``conv3x3``: conv3x3 (C -> mid, bias) + BNReLU;
    - ``ocr_gather_head`` (:class:`SpatialGather`): object centres (B, mid, classes, 1);
    - ``ocr_distri_head`` (:class:`SpatialOCR`, key ``ocr_key_channels``, scale 1, ``dropout``);
    - ``cls_head``: conv1x1 (mid -> classes, bias).

    Returns ``{"out": main logits, "aux": aux logits}``, both (B, num_classes, H/4, W/4); the official net
    upsamples both to the input size (bilinear, align_corners=True) and trains with 1.0 * out + 0.4 * aux.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, ocr_mid_channels: int = 512,
                 ocr_key_channels: int = 256, dropout: float = 0.05, align_corners: bool = True):
        super().__init__()
        c = sum(in_channels)
        mid = ocr_mid_channels
        self.align_corners = align_corners
        self.num_classes = num_classes
        self.conv3x3 = nn.Sequential(nn.Conv2d(c, mid, 3, padding=1), bn_relu(mid))
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid, ocr_key_channels, mid, scale=1, dropout=dropout)
        self.cls_head = nn.Conv2d(mid, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(c, mid, 3, padding=1), bn_relu(mid), nn.Conv2d(mid, num_classes, 1))

    @property
    def feature_conv(self) -> nn.Module:
        """The 3x3 conv to ``ocr_mid_channels`` (its official name differs between the code bases)."""
        return self.conv3x3

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = concat_branches(features, self.align_corners)   # (B, C, H/4, W/4)
        aux = self.aux_head(feats)                              # (B, K, H/4, W/4)
        feats = self.feature_conv(feats)                        # (B, mid, H/4, W/4)
        context = self.ocr_gather_head(feats, aux)              # (B, mid, K, 1)
        feats = self.ocr_distri_head(feats, context)            # (B, mid, H/4, W/4)
        return {"out": self.cls_head(feats), "aux": aux}


class HRNetOCRHead(OCRHead):
    """HRNet + OCR head (HRNet-Semantic-Segmentation, HRNet-OCR branch ``seg_hrnet_ocr.py``), official names.

    As :class:`OCRHead` with HRNet-OCR's layers: ``aux_head`` = conv1x1 (C -> C, bias) + BN + ReLU + conv1x1
    (C -> classes, bias); ``conv3x3_ocr`` = conv3x3 (C -> mid, bias) + BN + ReLU; the OCR block's 1x1 convs have no
    bias.  Returns ``{"out", "aux"}`` at 1/4 resolution (B, num_classes, H/4, W/4).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, ocr_mid_channels: int = 512,
                 ocr_key_channels: int = 256, dropout: float = 0.05, align_corners: bool = True):
        nn.Module.__init__(self)   # OCRHead's forward with HRNet-OCR's layers and names
        c = sum(in_channels)
        mid = ocr_mid_channels
        self.align_corners = align_corners
        self.num_classes = num_classes
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(c, mid, 3, padding=1), bn(mid), nn.ReLU())
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid, ocr_key_channels, mid, scale=1, dropout=dropout, bias=False)
        self.cls_head = nn.Conv2d(mid, num_classes, 1)
        self.aux_head = nn.Sequential(nn.Conv2d(c, c, 1), bn(c), nn.ReLU(), nn.Conv2d(c, num_classes, 1))

    @property
    def feature_conv(self) -> nn.Module:
        return self.conv3x3_ocr


# ---------------------------------------------------------------------------------------------------------
# Semantic FPN (Kirillov et al., CVPR 2019), the segmentation decoder of UniFormer's ADE20K results
# (Sense-X/UniFormer ``semantic_segmentation/fpn_seg``: mmseg ``FPN`` neck + ``FPNHead``).  Module names follow
# mmseg (``neck.lateral_convs.<i>.conv``, ``decode_head.scale_heads.<i>.<k>.conv/bn``, ``decode_head.conv_seg``), so
# an official checkpoint's ``neck.*`` and ``decode_head.*`` load into :class:`SemanticFPNHead` unchanged.
# ---------------------------------------------------------------------------------------------------------


class FPN(nn.Module):
    """Feature pyramid neck (mmseg ``FPN`` with ``num_outs == len(in_channels)``, no norms or activations).

    Lateral conv1x1 (bias) per level to ``out_channels``; top-down: each lateral gets the nearest-upsampled sum of
    the level above; a conv3x3 (bias) per level.  [(B, C_l, H_l, W_l)] -> [(B, out_channels, H_l, W_l)].
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvBNAct(c, out_channels, 1, norm=False) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvBNAct(out_channels, out_channels, 3, norm=False) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]


class SemanticFPNDecoder(nn.Module):
    """Semantic FPN decoder (mmseg ``FPNHead``): merge the pyramid at the finest level and classify.

    Level ``l`` (stride ``s_l``) goes through ``max(1, log2(s_l / s_0))`` x [conv3x3 + BN + ReLU (to ``channels``),
    then x2 bilinear upsampling (align_corners=False) unless it is level 0]; the levels are summed (each resized to
    level 0's size), then Dropout2d and a conv1x1 (bias) to the classes: (B, num_classes, H_0, W_0).
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int, channels: int = 128,
                 dropout: float = 0.1, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.scale_heads = nn.ModuleList()
        for c, s in zip(in_channels, strides, strict=True):
            layers: list[nn.Module] = []
            for k in range(max(1, int(math.log2(s) - math.log2(strides[0])))):
                layers.append(ConvBNAct(c if k == 0 else channels, channels, 3, act=nn.ReLU(inplace=True)))
                if s != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, f in zip(self.scale_heads[1:], features[1:], strict=True):
            out = out + F.interpolate(head(f), size=out.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return self.conv_seg(self.dropout(out))


class SemanticFPNHead(nn.Module):
    """Semantic FPN segmentation head: :class:`FPN` neck (``neck``) + :class:`SemanticFPNDecoder` (``decode_head``).

    Input: the backbone's four maps at strides 4..32 (UniFormer with ``multiscale_output=True``); output logits
    (B, num_classes, H/4, W/4), upsampled to the label size by the loss and inference as the other heads'.
    Official configuration: 256 FPN channels, 128 decoder channels, dropout 0.1.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, strides: Sequence[int] = (4, 8, 16, 32),
                 fpn_channels: int = 256, channels: int = 128, dropout: float = 0.1, align_corners: bool = False):
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"{len(in_channels)} input maps but {len(strides)} strides; Semantic FPN needs the "
                             "backbone's multi-scale output (multiscale_output=True)")
        self.neck = FPN(in_channels, fpn_channels)
        self.decode_head = SemanticFPNDecoder([fpn_channels] * len(in_channels), strides, num_classes, channels,
                                              dropout, align_corners)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decode_head(self.neck(features))

"""Segmentation heads on the multi-resolution representation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import bn


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

    All convolutions have a bias.  With ``scale > 1`` the pixels are max-pooled first and the context is
    upsampled back (bilinear, align_corners=True), as in the official code.  Returns (B, C, H, W).
    """

    def __init__(self, in_channels: int, key_channels: int, scale: int = 1):
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.pool = nn.MaxPool2d(kernel_size=(scale, scale))
        self.f_pixel = nn.Sequential(
            nn.Conv2d(in_channels, key_channels, 1), bn_relu(key_channels),
            nn.Conv2d(key_channels, key_channels, 1), bn_relu(key_channels))
        self.f_object = nn.Sequential(
            nn.Conv2d(in_channels, key_channels, 1), bn_relu(key_channels),
            nn.Conv2d(key_channels, key_channels, 1), bn_relu(key_channels))
        self.f_down = nn.Sequential(nn.Conv2d(in_channels, key_channels, 1), bn_relu(key_channels))
        self.f_up = nn.Sequential(nn.Conv2d(key_channels, in_channels, 1), bn_relu(in_channels))

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
                 dropout: float = 0.1):
        super().__init__()
        self.object_context_block = ObjectAttention(in_channels, key_channels, scale)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, 1), bn_relu(out_channels), nn.Dropout2d(dropout))

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

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = concat_branches(features, self.align_corners)   # (B, C, H/4, W/4)
        aux = self.aux_head(feats)                              # (B, K, H/4, W/4)
        feats = self.conv3x3(feats)                             # (B, mid, H/4, W/4)
        context = self.ocr_gather_head(feats, aux)              # (B, mid, K, 1)
        feats = self.ocr_distri_head(feats, context)            # (B, mid, H/4, W/4)
        return {"out": self.cls_head(feats), "aux": aux}

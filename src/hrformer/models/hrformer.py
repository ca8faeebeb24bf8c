"""HRFormer (Yuan et al., NeurIPS 2021): the multi-resolution scaffold with local-window transformer blocks.

The block computes what the official code computes (HRNet/HRFormer, see ``../shared/docs``):

    x (B, C, H, W) -> tokens
    x = x + DropPath(WindowAttention(LayerNorm(x)))      # K x K windows, centred zero padding, no mask
    x = x + DropPath(FFN(LayerNorm(x)))                  # 1x1-BN-GELU, dw3x3-BN-GELU, 1x1-BN-GELU

Internally the block keeps tokens as a contiguous (B, H, W, C) tensor, so LayerNorm needs no copy, the
FFN convolutions run on a channels-last view and window partitioning is a reshape + transpose; attention
runs through ``scaled_dot_product_attention`` over all windows at once, with the relative position bias as
the additive mask (on CPU an explicit matmul + softmax measured faster for these 49-token windows; see
``docs/benchmarks.md``).
Fusion downsampling is depth-wise separable.

``attn_impl="reference"`` (``BLOCK_IMPLS``) swaps in blocks that compute the official code literally
(contiguous tokens (B, N, C) between the sub-layers, the FFN on a contiguous NCHW copy, sequence-first windows,
separate projections, ``bmm``, the official drop-path arithmetic); they have the same parameters, so state dicts
are interchangeable.

Options the official checkpoints need:
- ``rpe``: add the relative position bias (cls/seg and the paper: True; the official pose code
  computes the table but never adds it: False).
- ``fuse_upsample``: ``"bilinear"`` for the official pose checkpoints, ``"nearest"`` for cls/seg.
- ``multiscale_output``: False for the official single-output pose configuration.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DropPath, bn
from .convert import Layout, resize_bias_table
from .registry import register_backbone, register_family_rules
from .scaffold import HRBackbone, ScaffoldRules, ScaffoldSpec, StageSpec

LN_EPS = 1e-6


def relative_position_index(window_size: int) -> torch.Tensor:
    """(K*K, K*K) int64 index into the ((2K-1)^2, heads) bias table: (dh + K-1) * (2K-1) + (dw + K-1).

    ``dh = h_query - h_key``; tokens of a window are numbered row-major.
    """
    k = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")).flatten(1)  # (2, L)
    rel = coords[:, :, None] - coords[:, None, :] + (k - 1)  # (2, L, L)
    return rel[0] * (2 * k - 1) + rel[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping K x K windows.

    Input/output (B, H, W, C).  H and W are zero-padded to multiples of K, the floor half of the padding
    on top/left (as the official code).  Padded tokens take part as keys and values (no mask).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, rpe: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.window_size, self.rpe = dim, num_heads, window_size, rpe
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, K*K, K*K) additive attention bias."""
        n = self.window_size**2
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        k = self.window_size
        pad_h, pad_w = (-h) % k, (-w) % k
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        hp, wp = h + pad_h, w + pad_w
        nh, nw = hp // k, wp // k
        # (B, nh, K, nw, K, C) -> (B * nh * nw, K*K, C): windows ordered batch, row, column.
        x = x.reshape(b, nh, k, nw, k, c).transpose(2, 3).reshape(b * nh * nw, k * k, c)
        # Separate projections (a fused qkv matmul measured no faster, and the complexity counter attributes
        # the paper's "conv + qkv" MACs to the q/k/v modules).
        q, kk, v = (proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
                    for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B', heads, L, hd) each
        mask = self.relative_position_bias().to(q.dtype) if self.rpe else None
        if q.is_cuda:  # fused kernels (flash / memory-efficient) with the bias as the additive mask
            out = F.scaled_dot_product_attention(q, kk, v, attn_mask=mask)  # (B', heads, L, hd)
        else:  # CPU: for these short windows an explicit matmul + softmax measured faster than SDPA's kernel
            attn = (q * self.head_dim**-0.5) @ kk.transpose(-2, -1)  # (B', heads, L, L)
            if mask is not None:
                attn = attn + mask
            out = attn.softmax(dim=-1) @ v
        out = self.out_proj(out.transpose(1, 2).reshape(b * nh * nw, k * k, c))
        out = out.reshape(b, nh, nw, k, k, c).transpose(2, 3).reshape(b, hp, wp, c)
        if pad_h or pad_w:
            out = out[:, pad_h // 2: pad_h // 2 + h, pad_w // 2: pad_w // 2 + w]
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, window={self.window_size}, rpe={self.rpe}"


class ReferenceWindowAttention(WindowAttention):
    """``WindowAttention`` computed literally as the official ``MHA_`` (same parameters, slower).

    Input/output tokens (B, N, C) with N = H * W row-major: explicit ``F.pad``, the einops window permute
    to sequence-first (L, B', C), separate q/k/v projections, ``q * head_dim**-0.5``, ``bmm`` logits
    (+ the relative position bias when ``rpe``), softmax, ``bmm``, ``out_proj``, reverse permute, un-pad.
    """

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        k, heads, hd = self.window_size, self.num_heads, self.head_dim
        x = x.view(b, h, w, c)
        pad_h, pad_w = math.ceil(h / k) * k - h, math.ceil(w / k) * k - w
        x = F.pad(x, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        hp, wp = h + pad_h, w + pad_w
        qh, qw = hp // k, wp // k
        # "n (qh ph) (qw pw) c -> (ph pw) (n qh qw) c"
        x = x.view(b, qh, k, qw, k, c).permute(2, 4, 0, 1, 3, 5).reshape(k * k, b * qh * qw, c)
        length, windows = x.shape[:2]
        q = self.q_proj(x) * hd**-0.5
        kk = self.k_proj(x)
        v = self.v_proj(x)
        q = q.contiguous().view(length, windows * heads, hd).transpose(0, 1)
        kk = kk.contiguous().view(length, windows * heads, hd).transpose(0, 1)
        v = v.contiguous().view(length, windows * heads, hd).transpose(0, 1)
        attn = torch.bmm(q, kk.transpose(1, 2))  # (B' * heads, L, L)
        if self.rpe:
            attn = attn.view(windows, heads, length, length) + self.relative_position_bias().unsqueeze(0)
            attn = attn.view(windows * heads, length, length)
        attn = F.softmax(attn, dim=-1)
        out = torch.bmm(attn, v)  # (B' * heads, L, hd)
        out = out.transpose(0, 1).contiguous().view(length, windows, c)
        out = self.out_proj(out)
        # "(ph pw) (n qh qw) c -> n (qh ph) (qw pw) c"
        out = out.view(k, k, b, qh, qw, c).permute(2, 3, 0, 4, 1, 5).reshape(b, hp, wp, c)
        out = out[:, pad_h // 2: pad_h // 2 + h, pad_w // 2: pad_w // 2 + w]
        return out.reshape(b, h * w, c)


class ConvFFN(nn.Module):
    """HRFormer's FFN: conv1x1-BN-GELU, depth-wise conv3x3-BN-GELU, conv1x1-BN-GELU.

    Input/output (B, H, W, C); the convolutions run on the channels-last (B, C, H, W) view.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.bn1 = bn(hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.bn2 = bn(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.bn3 = bn(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        x = self.act(self.bn1(self.fc1(x)))
        x = self.act(self.bn2(self.dwconv(x)))
        x = self.act(self.bn3(self.fc2(x)))
        return x.permute(0, 2, 3, 1)


class ReferenceConvFFN(ConvFFN):
    """``ConvFFN`` as the official ``MlpDWBN``: tokens (B, N, C) -> contiguous (B, C, H, W) copy -> convs ->
    contiguous tokens copy (the official ``.permute(...).contiguous()`` on both sides)."""

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        x = x.permute(0, 2, 1).contiguous().reshape(b, c, h, w)
        x = self.act(self.bn1(self.fc1(x)))
        x = self.act(self.bn2(self.dwconv(x)))
        x = self.act(self.bn3(self.fc2(x)))
        return x.reshape(b, c, -1).permute(0, 2, 1).contiguous()


class ReferenceDropPath(DropPath):
    """``DropPath`` written as the official ``drop_path``: ``x.div(keep) * floor(keep + rand)`` (two full-size
    passes instead of one multiply by a (B, 1, ...) mask).  The same distribution, another random stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep) * mask


class HRFormerBlock(nn.Module):
    """Pre-norm local-window transformer block. (B, C, H, W) -> (B, C, H, W).

    Subclasses change only the forward computation (``attn_cls`` / ``ffn_cls`` must keep the parameters).
    """

    attn_cls: type[WindowAttention] = WindowAttention
    ffn_cls: type[ConvFFN] = ConvFFN

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, rpe: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = self.attn_cls(dim, num_heads, window_size, rpe)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.ffn = self.ffn_cls(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous (B, H, W, C): LayerNorm without a copy, and the same layout for every op and gradient of the
        # block (a strided NCHW view here made LayerNorm, GELU and conv backward much slower).  A no-op when
        # the input is already channels-last (the previous block's output).
        t = x.permute(0, 2, 3, 1).contiguous()
        t = t + self.drop_path(self.attn(self.norm1(t)))
        t = t + self.drop_path(self.ffn(self.norm2(t)))
        return t.permute(0, 3, 1, 2)


class ReferenceHRFormerBlock(HRFormerBlock):
    """``HRFormerBlock`` computed as the official ``GeneralTransformerBlock``: tokens (B, N, C) between the
    sub-layers.  Same parameters and state-dict keys as ``HRFormerBlock``."""

    attn_cls = ReferenceWindowAttention
    ffn_cls = ReferenceConvFFN

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop_path = ReferenceDropPath(self.drop_path.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.view(b, c, h * w).permute(0, 2, 1).contiguous()  # (B, N, C), copied as the official block does
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        x = x + self.drop_path(self.ffn(self.norm2(x), h, w))
        return x.permute(0, 2, 1).contiguous().view(b, c, h, w)


# ``attn_impl`` option of ``HRFormer``: name -> block class (identical parameters, different forward).
BLOCK_IMPLS: dict[str, type[HRFormerBlock]] = {
    "fast": HRFormerBlock,
    "reference": ReferenceHRFormerBlock,
}


@dataclass(frozen=True)
class HRFormerConfig:
    channels: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    num_modules: tuple[int, int, int]  # stages 2, 3, 4
    num_blocks: int = 2  # per branch
    stage1_blocks: int = 2
    mlp_ratio: float = 4.0


HRFORMER_CONFIGS: dict[str, HRFormerConfig] = {
    "hrformer_t": HRFormerConfig(channels=(18, 36, 72, 144), num_heads=(1, 2, 4, 8), num_modules=(1, 3, 2)),
    "hrformer_s": HRFormerConfig(channels=(32, 64, 128, 256), num_heads=(1, 2, 4, 8), num_modules=(1, 4, 2)),
    "hrformer_b": HRFormerConfig(channels=(78, 156, 312, 624), num_heads=(2, 4, 8, 16), num_modules=(1, 4, 2)),
}


class HRFormer(HRBackbone):
    """HRFormer backbone.  forward: (B, 3, H, W) -> [(B, C1, H/4, W/4), ..., (B, C4, H/32, W/32)].

    Args:
        config: channels, heads and depth of the variant.
        window_size: attention window K (7 in every official ImageNet/pose model; 13/15 for some seg rows).
        rpe: add the relative position bias (see the module docstring).
        fuse_upsample: ``"nearest"`` (cls/seg) or ``"bilinear"`` (official pose).
        multiscale_output: False builds the last module to fuse only the highest branch.
        drop_path_rate: maximum stochastic-depth rate (linear over the 12/14 block positions).
        attn_impl: block implementation, a key of ``BLOCK_IMPLS``: ``"fast"`` (default) or ``"reference"``
            (the official computation written literally; same parameters, so state dicts are interchangeable).
    """

    def __init__(self, config: HRFormerConfig, window_size: int = 7, rpe: bool = True,
                 fuse_upsample: str = "nearest", multiscale_output: bool = True, drop_path_rate: float = 0.0,
                 attn_impl: str = "fast"):
        if attn_impl not in BLOCK_IMPLS:
            raise ValueError(f"unknown attn_impl {attn_impl!r}; choose one of {', '.join(BLOCK_IMPLS)}")
        block_cls = BLOCK_IMPLS[attn_impl]
        cfg = config
        spec = ScaffoldSpec(
            stage1_blocks=cfg.stage1_blocks, stage1_channels=64,
            stages=tuple(StageSpec(cfg.num_modules[s], (cfg.num_blocks,) * (s + 2), cfg.channels[: s + 2])
                         for s in range(3)),
        )

        def make_block(channels: int, stage: int, branch: int, drop_path: float) -> HRFormerBlock:
            return block_cls(channels, cfg.num_heads[branch], window_size, cfg.mlp_ratio, drop_path, rpe)

        super().__init__(spec, make_block, fusion="dwsep", fuse_upsample=fuse_upsample,
                         multiscale_output=multiscale_output, drop_path_rate=drop_path_rate)
        self.window_size = window_size
        self.attn_impl = attn_impl
        self.apply(_init_transformer_weights)


def _init_transformer_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


for _name, _cfg in HRFORMER_CONFIGS.items():
    register_backbone(_name, partial(HRFormer, _cfg), family="hrformer")


class HRFormerRules(ScaffoldRules):
    """The official HRFormer checkpoints (HRNet/HRFormer ``cls``, ``pose`` and ``seg`` code bases).

    Block internals: ``attn.attn.*`` -> ``attn.*``, ``mlp.{fc1,norm1,dw3x3,norm2,fc2,norm3}`` ->
    ``ffn.{fc1,bn1,dwconv,bn2,fc2,bn3}``.  Layouts, told apart by the head keys:

    - classification (``incre_modules``, ``classifier``): nearest fusion upsampling, relative position bias;
    - segmentation (``conv3x3``, ``ocr_*``, ``aux_head``, ``cls_head``; openseg ``{'config_dict', 'state_dict':
      'module.*'}``): the same backbone, OCR head with align_corners=True;
    - pose (``keypoint_head.final_layer`` / ``final_layer.weight``, or a single-output last module): bilinear
      fusion upsampling and no relative position bias (the official pose code never adds it);
    - no head (ImageNet backbones): as classification, or as pose when the last module is single-output.

    The window size is read from the bias tables; ``window_size`` given to the converter resizes them.
    """

    backbone_rules = ScaffoldRules.backbone_rules + [
        (re.compile(r"\.attn\.attn\."), ".attn."),
        (re.compile(r"\.mlp\.fc1\."), ".ffn.fc1."),
        (re.compile(r"\.mlp\.norm1\."), ".ffn.bn1."),
        (re.compile(r"\.mlp\.dw3x3\."), ".ffn.dwconv."),
        (re.compile(r"\.mlp\.norm2\."), ".ffn.bn2."),
        (re.compile(r"\.mlp\.fc2\."), ".ffn.fc2."),
        (re.compile(r"\.mlp\.norm3\."), ".ffn.bn3."),
    ]

    @staticmethod
    def window_size(backbone: dict) -> int | None:
        table = next((v for k, v in backbone.items() if k.endswith("relative_position_bias_table")), None)
        return None if table is None else (math.isqrt(table.shape[0]) + 1) // 2

    def layout(self, backbone: dict, head: dict, hints: dict) -> Layout:
        window = hints.get("window_size") or self.window_size(backbone) or 7
        multiscale = self.multiscale(backbone)
        paper = {"multiscale_output": True, "fuse_upsample": "nearest", "rpe": True, "window_size": window}
        pose = {"multiscale_output": multiscale, "fuse_upsample": "bilinear", "rpe": False, "window_size": window}
        if self.has(head, "incre_modules.", "classifier."):
            return Layout("HRFormer (cls)", "cls", paper, "hr-cls")
        if self.has(head, "cls_head.", "ocr_distri_head."):
            return Layout("HRFormer (seg, OCR)", "seg", paper, "ocr", {"align_corners": True})
        if "final_layer.weight" in head:
            return Layout("HRFormer (pose)", "pose", pose, "heatmap-1x1",
                          {"kernel_size": head["final_layer.weight"].shape[-1]})
        return Layout("HRFormer (backbone)", None, paper if multiscale else pose)

    def adapt(self, backbone: dict, layout: Layout, hints: dict) -> dict:
        window = layout.backbone_options["window_size"]
        return {k: resize_bias_table(v, window) if k.endswith("relative_position_bias_table") else v
                for k, v in backbone.items()}


register_family_rules("hrformer", HRFormerRules())

"""UniFormer (Li et al., ICLR 2022 / TPAMI 2023): convolution and self-attention unified as relation aggregators.

    image (B, 3, H, W)
      -> patch_embed1 (conv 4x4 s4 + LayerNorm; S-dagger: two conv3x3 s2 + BN)     (B, 64, H/4, W/4)
      -> blocks1: local MHRA blocks                                                  stride 4
      -> patch_embed2 (conv 2x2 s2 + LN) -> blocks2: local MHRA blocks               (B, 128, H/8, W/8)
      -> patch_embed3 -> blocks3: global MHRA (self-attention) blocks                (B, 320, H/16, W/16)
      -> patch_embed4 -> blocks4: global MHRA blocks                                 (B, 512, H/32, W/32)

Every block starts with the dynamic position embedding ``x = x + DWConv3x3(x)``.  A local MHRA block is
``x + Conv1x1(DWConv5x5(Conv1x1(BN(x))))`` followed by a conv MLP on ``BN(x)``; a global one is multi-head
self-attention over all tokens on ``LayerNorm(x)`` followed by an MLP, pre-norm, both with drop path.

Configurations and key names follow the official code (Sense-X/UniFormer ``image_classification/models/uniformer.py``
and the ``pose_estimation`` / ``semantic_segmentation`` backbones; ``../shared/docs/hrnet-family-facts.md``
section 1c).  Attribute names are the official ones (``patch_embed1``, ``blocks1``, ``pos_embed``, ``norm1``,
``attn``, ``mlp``, ...), so official checkpoints load after removing their prefixes.

Layouts (options of :class:`UniFormer`):

- ``output_norms=True`` (pose/seg checkpoints): a LayerNorm (eps 1e-6) ``norm1..norm4`` on each stage's output.
  ``multiscale_output=True`` returns the four normalised stage maps (segmentation: Semantic FPN);
  ``False`` only the last one (pose: the official pose backbone builds all four norms but returns stage 4, so
  ``norm1..3`` exist, as in its checkpoints, but are not used and are frozen (``requires_grad=False``) so that
  distributed training needs no unused-parameter search).
- ``output_norms=False, multiscale_output=False`` (classification checkpoints): the raw stage-4 map; the
  classification head (:class:`hrformer.models.heads.UniFormerClsHead`) holds the official ``norm`` and ``head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DropPath, bn
from .convert import CheckpointRules, Layout
from .registry import register_backbone, register_family_rules

LN_EPS = 1e-6  # blocks and stage-output norms; the patch embeddings' LayerNorm keeps PyTorch's 1e-5


class PatchEmbed(nn.Module):
    """Non-overlapping patches: conv k = s = ``patch_size`` (bias), then LayerNorm (eps 1e-5) over channels.

    (B, C_in, H, W) -> (B, dim, H / p, W / p).  No check of the input size (the official classification code
    asserts 224x224; its pose and segmentation copies do not).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class ConvStem(nn.Module):
    """S-dagger's overlapping stem (official ``head_embedding``): conv3x3 s2 + BN + GELU + conv3x3 s2 + BN.

    (B, C_in, H, W) -> (B, dim, H/4, W/4); the first conv has ``dim // 2`` channels; convs have a bias.
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, dim // 2, 3, stride=2, padding=1), bn(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), bn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvDownsample(nn.Module):
    """S-dagger's later embeddings (official ``middle_embedding``): conv3x3 s2 (bias) + BN.

    (B, C, H, W) -> (B, dim, H/2, W/2).
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, dim, 3, stride=2, padding=1), bn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvMlp(nn.Module):
    """conv1x1 -> GELU -> conv1x1 on (B, C, H, W) (official ``CMlp``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on tokens (B, N, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiHeadSelfAttention(nn.Module):
    """Global multi-head self-attention on tokens (B, N, C) -> (B, N, C).

    ``qkv`` is one Linear(C, 3C) whose output channels are ordered (q | k | v), each head-major, as the official
    ``Attention``; softmax(q k^T / sqrt(head_dim)) v through ``scaled_dot_product_attention``, then ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LocalMHRABlock(nn.Module):
    """UniFormer block with local relation aggregation (official ``CBlock``): (B, C, H, W) -> (B, C, H, W).

    ``x += pos_embed(x)`` (depth-wise conv3x3, bias); ``x += DropPath(conv2(attn(conv1(norm1(x)))))`` with
    ``norm1`` BatchNorm, ``conv1/conv2`` 1x1 and ``attn`` a depth-wise conv5x5 (the local affinity);
    ``x += DropPath(mlp(norm2(x)))`` with ``norm2`` BatchNorm and a conv MLP.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = bn(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.drop_path = DropPath(drop_path)
        self.norm2 = bn(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class GlobalMHRABlock(nn.Module):
    """UniFormer block with global relation aggregation (official ``SABlock``): (B, C, H, W) -> (B, C, H, W).

    ``x += pos_embed(x)`` (depth-wise conv3x3), then on the H*W tokens: ``t += DropPath(attn(norm1(t)))``
    (:class:`MultiHeadSelfAttention`), ``t += DropPath(mlp(norm2(t)))``; LayerNorms with eps 1e-6.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 qkv_bias: bool = True):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path(self.attn(self.norm1(t)))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(b, c, h, w)


@dataclass(frozen=True)
class UniFormerConfig:
    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int] = (64, 128, 320, 512)
    head_dim: int = 64  # heads = dim // head_dim in the global stages
    conv_stem: bool = False  # S-dagger: overlapping convolutional embeddings
    mlp_ratio: float = 4.0


UNIFORMER_CONFIGS: dict[str, UniFormerConfig] = {
    "uniformer_s": UniFormerConfig(depths=(3, 4, 8, 3)),
    "uniformer_s_plus": UniFormerConfig(depths=(3, 5, 9, 3), head_dim=32, conv_stem=True),
    "uniformer_b": UniFormerConfig(depths=(5, 8, 20, 7)),
}


class UniFormer(nn.Module):
    """UniFormer backbone.  forward: (B, 3, H, W) -> [(B, 64, H/4, W/4), ..., (B, 512, H/32, W/32)] or the last.

    Args:
        config: depths, widths, head dim and stem of the variant.
        multiscale_output: return the four stage maps (True) or only stage 4 (False).
        output_norms: the downstream (pose/seg) layout with LayerNorms ``norm1..norm4`` on the stage outputs;
            False: no such norms (classification layout, needs ``multiscale_output=False``).
        drop_path_rate: maximum stochastic depth, linear over all blocks (official schedule).
        head_dim: override the config's attention head width (released S-dagger weights use 32; the
            ``uniformer_small_plus_dim64`` weights 64).  Parameters do not depend on it.

    Attributes ``out_channels`` and ``strides`` describe the output list.  H and W must be multiples of 32 for
    the patch embeddings to tile the image (smaller remainders are cropped by the strided convolutions).
    """

    def __init__(self, config: UniFormerConfig, multiscale_output: bool = True, output_norms: bool = True,
                 drop_path_rate: float = 0.0, head_dim: int | None = None):
        super().__init__()
        if multiscale_output and not output_norms:
            raise ValueError("multiscale_output=True returns the normalised stage maps: it needs output_norms=True")
        cfg = config
        dims, depths = cfg.dims, cfg.depths
        head_dim = head_dim or cfg.head_dim
        if cfg.conv_stem:
            self.patch_embed1 = ConvStem(3, dims[0])
            embeds = [ConvDownsample(dims[i - 1], dims[i]) for i in range(1, 4)]
        else:
            self.patch_embed1 = PatchEmbed(3, dims[0], 4)
            embeds = [PatchEmbed(dims[i - 1], dims[i], 2) for i in range(1, 4)]
        self.patch_embed2, self.patch_embed3, self.patch_embed4 = embeds
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        offsets = [sum(depths[:i]) for i in range(4)]
        for s in range(4):
            if s < 2:
                blocks = [LocalMHRABlock(dims[s], cfg.mlp_ratio, rates[offsets[s] + k]) for k in range(depths[s])]
            else:
                blocks = [GlobalMHRABlock(dims[s], dims[s] // head_dim, cfg.mlp_ratio, rates[offsets[s] + k])
                          for k in range(depths[s])]
            setattr(self, f"blocks{s + 1}", nn.ModuleList(blocks))
        self.output_norms = output_norms
        if output_norms:
            for s in range(4):
                setattr(self, f"norm{s + 1}", nn.LayerNorm(dims[s], eps=LN_EPS))
        self.multiscale_output = multiscale_output
        self.out_channels: tuple[int, ...] = tuple(dims) if multiscale_output else (dims[-1],)
        self.strides: tuple[int, ...] = (4, 8, 16, 32) if multiscale_output else (32,)
        self.config, self.head_dim, self.drop_path_rate = cfg, head_dim, drop_path_rate
        self.apply(_init_official)
        if output_norms and not multiscale_output:
            for s in range(3):
                getattr(self, f"norm{s + 1}").requires_grad_(False)

    def _stage_output(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        if not self.output_norms:
            return x
        return getattr(self, f"norm{stage + 1}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in range(4):
            x = getattr(self, f"patch_embed{s + 1}")(x)
            for block in getattr(self, f"blocks{s + 1}"):
                x = block(x)
            if self.multiscale_output or s == 3:
                outs.append(self._stage_output(x, s))
        return outs


def _init_official(m: nn.Module) -> None:
    """The official ``_init_weights``: Linear trunc-normal std 0.02 with zero bias, LayerNorm 1 / 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


for _name, _cfg in UNIFORMER_CONFIGS.items():
    register_backbone(_name, partial(UniFormer, _cfg), family="uniformer")


class UniFormerRules(CheckpointRules):
    """The official UniFormer checkpoints (Sense-X/UniFormer): backbone names are kept (``patch_embed*``,
    ``blocks*``, the downstream models' ``norm1..4``).  Layouts, told apart by the head keys:

    - classification (``{'model': ...}`` with ``norm`` + ``head``): no stage-output norms, the stage-4 map;
    - pose (mmpose: ``keypoint_head.deconv_layers``, ``final_layer``): norms, the stage-4 map, deconv head;
    - segmentation (mmseg: ``neck``, ``decode_head``): norms, four maps, Semantic FPN;
    - no head: the four normalised maps when the norms are there, else the classification backbone.
    """

    backbone_roots = ("patch_embed", "blocks", "norm1.", "norm2.", "norm3.", "norm4.")

    def layout(self, backbone: dict, head: dict, hints: dict) -> Layout:
        norms = any(k.startswith("norm1.") for k in backbone)
        if "head.weight" in head:
            return Layout("UniFormer (cls)", "cls", {"output_norms": False, "multiscale_output": False},
                          "uniformer-cls")
        if any(k.startswith("deconv_layers.") for k in head):
            return Layout("UniFormer (pose)", "pose", {"output_norms": True, "multiscale_output": False},
                          "deconv-heatmap")
        if any(k.startswith(("neck.", "decode_head.")) for k in head):
            return Layout("UniFormer (seg, Semantic FPN)", "seg", {"output_norms": True, "multiscale_output": True},
                          "semantic-fpn")
        return Layout("UniFormer (backbone)", None, {"output_norms": norms, "multiscale_output": norms})

    def absent_from(self, backbone_options: dict) -> tuple[str, ...]:
        """Classification files have no stage-output norms; the pose/seg backbones start them fresh (LayerNorm 1/0),
        as the official downstream code does when it loads ImageNet weights non-strictly."""
        return () if backbone_options.get("output_norms", True) else ("norm1.", "norm2.", "norm3.", "norm4.")


register_family_rules("uniformer", UniFormerRules())

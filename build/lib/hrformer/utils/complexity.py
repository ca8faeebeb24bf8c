"""Parameter and compute counting for backbones with their task heads.

Compute is counted with ``torch.utils.flop_counter.FlopCounterMode`` on a model **and** input built on
the ``meta`` device (batch 1, eval mode, no grad), so even 1024x2048 inputs cost no real arithmetic.
On ``meta``, ``scaled_dot_product_attention`` decomposes into ``bmm`` and the attention products are
counted; on a real CPU the fused kernel is invisible to the counter, so do not count there.

Conventions (``FlopCounterMode`` counts 2 FLOPs per multiply-add, and only convolution, linear and
matrix products — no norms, activations, softmax, interpolation or element-wise ops):

- ``gmacs``: total FLOPs / 2 / 1e9 — our headline number.
- ``gmacs_2_30``: the same MACs / 2**30, the unit the official HRNet repositories print as "GFLOPs".
- ``conv_qkv_gmacs``: convolutions plus the q/k/v projection ``Linear`` layers only, / 1e9 — what the
  mmcv hook counter used for the HRFormer pose paper sees (no ``out_proj``, no attention ``bmm``).
- ``torchstat_mflops``: the Lite-HRNet paper's "FLOPs": the ``torchstat`` tool shipped in HRNet/Lite-HRNet
  (``tools/torchstat``) sums per *leaf module* conv multiply-adds plus conv-bias additions, BatchNorm (2 per
  element), ReLU and pooling element counts, and ``nn.Upsample`` output positions (B*H*W: its formula drops the
  channels); a module called several times is counted for its last call only, and functional ops are not seen.
  The paper prints that total / 2**20 as "M".  See :class:`TorchstatCounter`.

    from hrformer.models.task_models import build_task_model
    from hrformer.utils.complexity import measure
    c = measure(lambda: build_task_model("hrformer_t", "pose"), (256, 192))
    c.params, c.gmacs          # 2524759 (backbone 2524436 + head), 1.485...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models.scaffold import UpsampleFuse

QKV_NAMES = frozenset({"q_proj", "k_proj", "v_proj"})


def count_params(module: nn.Module) -> int:
    """Exact number of parameters (buffers such as BN statistics are not parameters)."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class Complexity:
    """Parameters and FLOPs of one model at one input size (FLOPs = 2 x multiply-adds)."""

    params: int
    flops_by_op: dict[str, int] = field(default_factory=dict)
    qkv_flops: int = 0
    torchstat: int = 0  # see torchstat_flops

    @property
    def total_flops(self) -> int:
        return sum(self.flops_by_op.values())

    @property
    def gmacs(self) -> float:
        """Multiply-adds / 1e9 (every op ``FlopCounterMode`` counts)."""
        return self.total_flops / 2 / 1e9

    @property
    def gmacs_2_30(self) -> float:
        """Multiply-adds / 2**30: the official HRNet repositories' "GFLOPs"."""
        return self.total_flops / 2 / 2**30

    @property
    def conv_qkv_gmacs(self) -> float:
        """Convolution plus q/k/v projection multiply-adds / 1e9: the HRFormer pose paper's count."""
        return (self.flops_by_op.get("aten.convolution", 0) + self.qkv_flops) / 2 / 1e9

    @property
    def torchstat_mflops(self) -> float:
        """The Lite-HRNet paper's "FLOPs (M)": torchstat's total / 2**20 (see :func:`torchstat_flops`)."""
        return self.torchstat / 2**20


def _adaptive_pool_count(x: torch.Tensor, out: torch.Tensor) -> int:
    """torchstat's count for adaptive pooling: per output cell, (rows + 1) x (cols + 1) of its input window."""
    (h, w), (oh, ow) = x.shape[-2:], out.shape[-2:]
    total = 0
    for i in range(oh):
        rows = math.ceil((i + 1) * h / oh) - math.floor(i * h / oh) + 1
        for j in range(ow):
            total += rows * (math.ceil((j + 1) * w / ow) - math.floor(j * w / ow) + 1)
    return x.shape[0] * x.shape[1] * total


def _torchstat_count(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """torchstat's ``compute_flops`` of one module call (0 for module types it does not know)."""
    if isinstance(m, nn.Conv2d):
        positions = out.shape[0] * out.shape[2] * out.shape[3]
        macs = m.kernel_size[0] * m.kernel_size[1] * x.shape[1] * (out.shape[1] // m.groups) * positions
        return macs + (out.shape[1] * positions if m.bias is not None else 0)
    if isinstance(m, nn.ConvTranspose2d):
        macs = (m.kernel_size[0] * m.kernel_size[1] * m.in_channels * (m.out_channels // m.groups)
                * x.shape[0] * x.shape[2] * x.shape[3])
        return macs + (out.numel() if m.bias is not None else 0)
    if isinstance(m, nn.BatchNorm2d):
        return x.numel() * (2 if m.affine else 1)
    if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
        k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
        return out.numel() * k[0] * k[1]
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool_count(x, out)
    if isinstance(m, (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)):
        return x.numel()
    if isinstance(m, (nn.Upsample, UpsampleFuse)):  # UpsampleFuse holds the official nn.Upsample as a function
        # torchstat indexes the first sample and then skips its first (channel) dimension: B * H * W, not B*C*H*W
        return out.shape[0] * out[0].shape[1:].numel()
    if isinstance(m, nn.Linear):
        return x.numel() // x.shape[-1] * m.in_features * m.out_features
    return 0


class TorchstatCounter:
    """Context manager counting the forward passes inside it as HRNet/Lite-HRNet's ``tools/torchstat`` does.

    Hooks every leaf module (and our ``UpsampleFuse``, whose upsampling is an ``nn.Upsample`` leaf in the official
    fuse layers), keeps the count of each module's *last* call; ``total`` is the sum.  Works on the ``meta`` device.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.last: dict[nn.Module, int] = {}
        self.handles: list = []

    def _hook(self, module: nn.Module, args: tuple, output) -> None:
        self.last[module] = _torchstat_count(module, args[0], output)

    def __enter__(self) -> TorchstatCounter:
        self.handles = [m.register_forward_hook(self._hook) for m in self.model.modules()
                        if isinstance(m, UpsampleFuse) or not any(True for _ in m.children())]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    @property
    def total(self) -> int:
        return sum(self.last.values())


def torchstat_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Forward "FLOPs" of ``model(x)`` as HRNet/Lite-HRNet's ``tools/torchstat`` counts them (see
    :class:`TorchstatCounter`)."""
    with torch.no_grad(), TorchstatCounter(model) as counter:
        model(x)
    return counter.total


def _module_flops(counts: dict[str, dict], names: Iterable[str]) -> int:
    """FLOPs of the modules whose last name component is in ``names`` (leaf modules, no double count)."""
    wanted = set(names)
    return sum(sum(ops.values()) for mod, ops in counts.items() if mod.rsplit(".", 1)[-1] in wanted)


def measure(model_fn: Callable[[], nn.Module], input_hw: tuple[int, int], batch: int = 1,
            in_channels: int = 3, device: str = "meta") -> Complexity:
    """Build ``model_fn()`` on the meta device and count its parameters and forward FLOPs.

    ``model_fn`` must build the whole model (e.g. backbone + head) without loading weights; it is called
    inside ``torch.device("meta")`` so nothing is allocated.  ``device="cpu"`` runs for real instead (faster for
    models of many small layers, such as Lite-HRNet, at small sizes; wrong for attention through
    ``scaled_dot_product_attention``, whose fused CPU kernel the counter does not see).
    """
    with torch.device(device):
        model = model_fn()
        x = torch.randn(batch, in_channels, *input_hw)
    model.eval()
    with torch.no_grad(), TorchstatCounter(model) as stat, FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts()
    by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items()}
    qkv = _module_flops(counts, QKV_NAMES)
    return Complexity(params=count_params(model), flops_by_op=by_op, qkv_flops=qkv, torchstat=stat.total)


def count_gmacs(model_fn: Callable[[], nn.Module], input_hw: tuple[int, int], batch: int = 1) -> float:
    """Forward multiply-adds / 1e9 of ``model_fn()`` at ``input_hw`` (see :func:`measure`)."""
    return measure(model_fn, input_hw, batch).gmacs

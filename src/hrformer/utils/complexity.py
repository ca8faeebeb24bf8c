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

    from hrformer.models.task_models import build_task_model
    from hrformer.utils.complexity import measure
    c = measure(lambda: build_task_model("hrformer_t", "pose"), (256, 192))
    c.params, c.gmacs          # 2524759 (backbone 2524436 + head), 1.485...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

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


def _module_flops(counts: dict[str, dict], names: Iterable[str]) -> int:
    """FLOPs of the modules whose last name component is in ``names`` (leaf modules, no double count)."""
    wanted = set(names)
    return sum(sum(ops.values()) for mod, ops in counts.items() if mod.rsplit(".", 1)[-1] in wanted)


def measure(model_fn: Callable[[], nn.Module], input_hw: tuple[int, int], batch: int = 1,
            in_channels: int = 3) -> Complexity:
    """Build ``model_fn()`` on the meta device and count its parameters and forward FLOPs.

    ``model_fn`` must build the whole model (e.g. backbone + head) without loading weights; it is called
    inside ``torch.device("meta")`` so nothing is allocated.
    """
    with torch.device("meta"):
        model = model_fn()
        x = torch.randn(batch, in_channels, *input_hw)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts()
    by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items()}
    qkv = _module_flops(counts, QKV_NAMES)
    return Complexity(params=count_params(model), flops_by_op=by_op, qkv_flops=qkv)


def count_gmacs(model_fn: Callable[[], nn.Module], input_hw: tuple[int, int], batch: int = 1) -> float:
    """Forward multiply-adds / 1e9 of ``model_fn()`` at ``input_hw`` (see :func:`measure`)."""
    return measure(model_fn, input_hw, batch).gmacs

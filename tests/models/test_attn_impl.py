"""``attn_impl``: the literal official computation ("reference") and the fast one agree and share state dicts."""

from __future__ import annotations

import pytest
import torch

from hrformer.models import build_backbone
from hrformer.models.hrformer import BLOCK_IMPLS, HRFormerBlock, ReferenceHRFormerBlock
from tests.conftest import max_rel_err

FP32_TOL = 1e-5
BF16_TOL = 5e-2


def _pair(seed: int = 0, train: bool = False, **options) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """A fast and a reference hrformer_t with the same weights (random), in train or eval mode, and an input of
    odd size (100x76: every branch needs padding)."""
    torch.manual_seed(seed)
    fast = build_backbone("hrformer_t", attn_impl="fast", **options)
    with torch.no_grad():
        for name, p in fast.named_parameters():
            if name.endswith("relative_position_bias_table") or name.endswith(".bias"):
                p.normal_(std=0.1)  # make the bias table and the k/v biases (seen by padded tokens) matter
    ref = build_backbone("hrformer_t", attn_impl="reference", **options)
    ref.load_state_dict(fast.state_dict(), strict=True)
    fast.train(train)
    ref.train(train)
    torch.manual_seed(seed + 1)
    return fast, ref, torch.randn(2, 3, 100, 76)


def test_impl_table_and_unknown_value():
    assert BLOCK_IMPLS == {"fast": HRFormerBlock, "reference": ReferenceHRFormerBlock}
    with pytest.raises(ValueError, match="attn_impl"):
        build_backbone("hrformer_t", attn_impl="nope")


def test_blocks_are_selected():
    for impl, cls in BLOCK_IMPLS.items():
        model = build_backbone("hrformer_t", attn_impl=impl)
        blocks = [m for m in model.modules() if isinstance(m, HRFormerBlock)]
        assert blocks and all(type(m) is cls for m in blocks)


def test_state_dicts_interchangeable():
    fast = build_backbone("hrformer_t", attn_impl="fast")
    ref = build_backbone("hrformer_t", attn_impl="reference")
    assert list(fast.state_dict()) == list(ref.state_dict())
    for name, t in fast.state_dict().items():
        assert ref.state_dict()[name].shape == t.shape
    ref.load_state_dict(fast.state_dict(), strict=True)
    fast.load_state_dict(ref.state_dict(), strict=True)
    assert [n for n, _ in fast.named_buffers()] == [n for n, _ in ref.named_buffers()]


def test_fast_equals_reference_outputs_and_gradients_fp32():
    """Odd input size (100x76): every branch needs padding; train mode (batch-statistics BN)."""
    fast, ref, x = _pair(train=True, rpe=True)
    weights = None
    losses = []
    for model in (fast, ref):
        outs = model(x)
        if weights is None:
            weights = [torch.randn_like(o) for o in outs]
        loss = sum((o * wt).sum() for o, wt in zip(outs, weights, strict=True))
        loss.backward()
        losses.append([o.detach() for o in outs])
    for a, b in zip(*losses, strict=True):
        assert a.shape == b.shape
        assert max_rel_err(a, b) < FP32_TOL
    # Many gradients are structurally zero (conv biases before train-mode BN, the k bias under softmax), so
    # every tensor is compared relative to the largest gradient of the model; tensors with a clearly
    # non-zero gradient are also compared relative to their own scale (fp32 noise through ~40 blocks).
    ref_grads = dict(ref.named_parameters())
    scale = max(p.grad.abs().max().item() for p in ref.parameters() if p.grad is not None)
    checked = 0
    for name, p in fast.named_parameters():
        q = ref_grads[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is None:
            continue
        assert (p.grad - q.grad).abs().max().item() < FP32_TOL * scale, name
        if q.grad.abs().max().item() > 1e-3 * scale:
            assert max_rel_err(p.grad, q.grad) < 10 * FP32_TOL, name
            checked += 1
    assert any(n.endswith("relative_position_bias_table") and p.grad is not None for n, p in fast.named_parameters())
    assert checked > 100
    ref_buffers = dict(ref.named_buffers())  # BatchNorm running statistics and batch counts
    for name, buf in fast.named_buffers():
        if buf.is_floating_point():
            assert max_rel_err(buf, ref_buffers[name]) < FP32_TOL, name
        else:
            assert torch.equal(buf, ref_buffers[name]), name


def test_fast_equals_reference_bf16_autocast():
    fast, ref, x = _pair(seed=1, rpe=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outs_fast = fast(x)
        outs_ref = ref(x)
    for a, b in zip(outs_fast, outs_ref, strict=True):
        assert max_rel_err(a.float(), b.float()) < BF16_TOL


def test_reference_drop_path_is_the_official_arithmetic_with_the_same_distribution():
    """The reference block's drop path computes ``x.div(keep) * floor(keep + rand)`` (the official form); over many
    samples it drops the same share as the fast one and both keep the expectation."""
    from hrformer.models.blocks import DropPath
    from hrformer.models.hrformer import ReferenceDropPath

    block = ReferenceHRFormerBlock(32, 1, drop_path=0.3).train()
    assert isinstance(block.drop_path, ReferenceDropPath) and block.drop_path.p == 0.3
    x = torch.ones(20000, 4, 3)
    torch.manual_seed(0)
    kept = {}
    for name, module in (("fast", DropPath(0.3).train()), ("reference", block.drop_path)):
        out = module(x)
        per_sample = out[:, 0, 0]
        dropped, scaled = torch.isclose(per_sample, torch.tensor(0.0)), torch.isclose(per_sample, torch.tensor(1 / 0.7))
        assert (dropped | scaled).all()
        assert (out == per_sample[:, None, None]).all()   # one decision per sample
        kept[name] = (per_sample > 0).float().mean().item()
        assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    assert kept["fast"] == pytest.approx(0.7, abs=0.015) and kept["reference"] == pytest.approx(0.7, abs=0.015)
    block.eval()
    assert torch.equal(block.drop_path(x), x)

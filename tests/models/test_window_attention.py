"""Window attention equals a plain per-window, per-head loop that follows the official computation."""

from __future__ import annotations

import math

import pytest
import torch

from hrformer.models.hrformer import WindowAttention, relative_position_index


def loop_reference(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Pad with zeros (floor half top/left), attend within each K x K window separately, crop."""
    b, h, w, c = x.shape
    k, heads = attn.window_size, attn.num_heads
    hd = c // heads
    hp, wp = math.ceil(h / k) * k, math.ceil(w / k) * k
    top, left = (hp - h) // 2, (wp - w) // 2
    padded = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    padded[:, top:top + h, left:left + w] = x
    table = attn.relative_position_bias_table
    out = torch.zeros_like(padded)
    for n in range(b):
        for r in range(0, hp, k):
            for s in range(0, wp, k):
                tokens = padded[n, r:r + k, s:s + k].reshape(k * k, c)  # row-major inside the window
                q = attn.q_proj(tokens) * hd**-0.5
                kk = attn.k_proj(tokens)
                v = attn.v_proj(tokens)
                heads_out = []
                for m in range(heads):
                    sl = slice(m * hd, (m + 1) * hd)
                    logits = q[:, sl] @ kk[:, sl].T
                    if attn.rpe:
                        for i in range(k * k):
                            for j in range(k * k):
                                dh, dw = i // k - j // k, i % k - j % k
                                logits[i, j] = logits[i, j] + table[(dh + k - 1) * (2 * k - 1) + dw + k - 1, m]
                    heads_out.append(torch.softmax(logits, dim=-1) @ v[:, sl])
                out[n, r:r + k, s:s + k] = attn.out_proj(torch.cat(heads_out, dim=1)).reshape(k, k, c)
    return out[:, top:top + h, left:left + w]


@pytest.mark.parametrize(("h", "w", "k", "heads", "rpe"), [
    (6, 9, 3, 2, True),      # H divisible, W divisible
    (7, 5, 3, 4, True),      # neither divisible: centred padding on both axes
    (8, 4, 3, 1, False),     # no bias (official pose behaviour)
    (4, 10, 4, 2, True),     # pad only W, odd split (2 -> 1 left, 1 right)
])
def test_window_attention_equals_loop(h, w, k, heads, rpe):
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, num_heads=heads, window_size=k, rpe=rpe).double()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            proj.bias.normal_()  # padded tokens see k/v biases only: make them matter
    x = torch.randn(3, h, w, 8, dtype=torch.double)
    with torch.no_grad():
        fast = attn(x)
        ref = loop_reference(attn, x)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def test_relative_position_index_matches_formula():
    k = 3
    idx = relative_position_index(k)
    assert idx.shape == (9, 9) and idx.dtype == torch.int64
    for i in range(9):
        for j in range(9):
            assert idx[i, j] == (i // k - j // k + k - 1) * (2 * k - 1) + (i % k - j % k + k - 1)
    assert idx.min() == 0 and idx.max() == (2 * k - 1) ** 2 - 1


def test_window_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="num_heads"):
        WindowAttention(dim=10, num_heads=3)

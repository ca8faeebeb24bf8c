"""OCRHead: shapes, official key names, object attention re-computed by hand, gradients, parameter count.

Official reference: HRNet/HRFormer ``seg/lib/models/nets/hrt.py::HRT_SMALL_OCR_V2`` and
``seg/lib/models/modules/spatial_ocr_block.py`` (BNReLU = ``Sequential(BatchNorm2d, ReLU)``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrformer.models.heads import OCRHead

S_CHANNELS = (32, 64, 128, 256)


def branches(channels, b=2, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h // 2**i, w // 2**i, generator=g) for i, c in enumerate(channels)]


def official_keys(num_classes: int = 19) -> set[str]:
    """The head's state-dict keys of the official HRT_SMALL_OCR_V2 (``backbone.*`` left out).

    Derived from the official module tree: every conv has a bias, every BNReLU is a nested
    ``Sequential(BatchNorm2d, ReLU)``, SpatialGather / MaxPool / Dropout2d have no state.
    """
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys: set[str] = set()

    def conv(prefix):
        keys.update({f"{prefix}.weight", f"{prefix}.bias"})

    def bnrelu(prefix):
        keys.update(f"{prefix}.0.{s}" for s in bn)

    conv("conv3x3.0")
    bnrelu("conv3x3.1")
    oc = "ocr_distri_head.object_context_block"
    for name in ("f_pixel", "f_object"):
        conv(f"{oc}.{name}.0")
        bnrelu(f"{oc}.{name}.1")
        conv(f"{oc}.{name}.2")
        bnrelu(f"{oc}.{name}.3")
    for name in ("f_down", "f_up"):
        conv(f"{oc}.{name}.0")
        bnrelu(f"{oc}.{name}.1")
    conv("ocr_distri_head.conv_bn_dropout.0")
    bnrelu("ocr_distri_head.conv_bn_dropout.1")
    conv("cls_head")
    conv("aux_head.0")
    bnrelu("aux_head.1")
    conv("aux_head.2")
    return keys


def test_output_shapes_hrformer_s():
    head = OCRHead(S_CHANNELS, num_classes=19).eval()
    with torch.no_grad():
        out = head(branches(S_CHANNELS))
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 19, 16, 24)
    assert out["aux"].shape == (2, 19, 16, 24)


def test_output_shapes_odd_sizes_train_mode():
    head = OCRHead(S_CHANNELS, num_classes=5, ocr_mid_channels=32, ocr_key_channels=16).train()
    sizes = [(15, 21), (8, 11), (4, 6), (2, 3)]
    feats = [torch.randn(2, c, s, t) for c, (s, t) in zip(S_CHANNELS, sizes, strict=True)]
    out = head(feats)
    assert out["out"].shape == out["aux"].shape == (2, 5, 15, 21)


def test_state_dict_keys_equal_official():
    head = OCRHead(S_CHANNELS, num_classes=19)
    sd = head.state_dict()
    assert set(sd) == official_keys(19)
    # a few exact official keys and shapes
    assert sd["conv3x3.0.weight"].shape == (512, 480, 3, 3)
    assert sd["conv3x3.1.0.running_var"].shape == (512,)
    assert sd["ocr_distri_head.object_context_block.f_pixel.0.weight"].shape == (256, 512, 1, 1)
    assert sd["ocr_distri_head.object_context_block.f_pixel.3.0.weight"].shape == (256,)
    assert sd["ocr_distri_head.object_context_block.f_object.2.bias"].shape == (256,)
    assert sd["ocr_distri_head.object_context_block.f_down.0.weight"].shape == (256, 512, 1, 1)
    assert sd["ocr_distri_head.object_context_block.f_up.0.weight"].shape == (512, 256, 1, 1)
    assert sd["ocr_distri_head.conv_bn_dropout.0.weight"].shape == (512, 1024, 1, 1)
    assert sd["cls_head.weight"].shape == (19, 512, 1, 1)
    assert sd["aux_head.0.weight"].shape == (512, 480, 3, 3)
    assert sd["aux_head.2.bias"].shape == (19,)
    # an official-layout state dict loads strictly
    OCRHead(S_CHANNELS, num_classes=19).load_state_dict(sd, strict=True)


def _bn_relu(y, sd, bn):
    """Eval-mode BatchNorm + ReLU on (B, C, N), written out."""
    mean, var = sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"]
    y = (y - mean[None, :, None]) / torch.sqrt(var[None, :, None] + 1e-5)
    return (y * sd[f"{bn}.weight"][None, :, None] + sd[f"{bn}.bias"][None, :, None]).clamp_min(0)


def _conv_bn_relu_1x1(x, sd, conv, bn):
    """conv1x1 (bias) + eval BN + ReLU on (B, C, N) with plain einsum."""
    y = torch.einsum("oc,bcn->bon", sd[f"{conv}.weight"][:, :, 0, 0], x) + sd[f"{conv}.bias"][None, :, None]
    return _bn_relu(y, sd, bn)


def test_ocr_matches_manual_recomputation():
    torch.manual_seed(0)
    n_cls, mid, key = 3, 8, 4
    head = OCRHead((4, 4), num_classes=n_cls, ocr_mid_channels=mid, ocr_key_channels=key).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for name, buf in head.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in head.named_parameters():
            if ".1.0." in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
    feats = [torch.randn(1, 4, 4, 5), torch.randn(1, 4, 2, 3)]
    with torch.no_grad():
        got = head(feats)
    sd = {k: v.double() for k, v in head.state_dict().items()}

    # concat + 3x3 convs (library conv is fine here; the object attention is what is checked by hand)
    x = torch.cat([feats[0], F.interpolate(feats[1], size=(4, 5), mode="bilinear", align_corners=True)], 1)
    x = x.double()

    def conv3_bn_relu(x, conv, bn):
        y = F.conv2d(x, sd[f"{conv}.weight"], sd[f"{conv}.bias"], padding=1)
        return _bn_relu(y.flatten(2), sd, bn)

    aux_hidden = conv3_bn_relu(x, "aux_head.0", "aux_head.1.0")                      # (1, mid, N)
    aux = torch.einsum("kc,bcn->bkn", sd["aux_head.2.weight"][:, :, 0, 0], aux_hidden) + \
        sd["aux_head.2.bias"][None, :, None]                                          # (1, K, N)
    pix = conv3_bn_relu(x, "conv3x3.0", "conv3x3.1.0")[0]                            # (mid, N)
    n = pix.shape[1]

    # soft object regions: softmax over pixels, weighted sum of pixel features -> centres (mid, K)
    centres = torch.zeros(mid, n_cls, dtype=torch.float64)
    for k in range(n_cls):
        wk = torch.exp(aux[0, k] - aux[0, k].max())
        wk = wk / wk.sum()
        for i in range(n):
            centres[:, k] += wk[i] * pix[:, i]

    oc = "ocr_distri_head.object_context_block"

    def two(x, name):
        y = _conv_bn_relu_1x1(x[None], sd, f"{oc}.{name}.0", f"{oc}.{name}.1.0")
        return _conv_bn_relu_1x1(y, sd, f"{oc}.{name}.2", f"{oc}.{name}.3.0")[0]

    q, kk = two(pix, "f_pixel"), two(centres, "f_object")                             # (key, N), (key, K)
    v = _conv_bn_relu_1x1(centres[None], sd, f"{oc}.f_down.0", f"{oc}.f_down.1.0")[0]  # (key, K)
    ctx = torch.zeros(key, n, dtype=torch.float64)
    for i in range(n):
        logits = torch.tensor([float(q[:, i] @ kk[:, k]) for k in range(n_cls)], dtype=torch.float64)
        logits = logits / key**0.5
        a = torch.exp(logits - logits.max())
        a = a / a.sum()
        for k in range(n_cls):
            ctx[:, i] += a[k] * v[:, k]
    ctx = _conv_bn_relu_1x1(ctx[None], sd, f"{oc}.f_up.0", f"{oc}.f_up.1.0")[0]      # (mid, N)
    fused = _conv_bn_relu_1x1(torch.cat([ctx, pix], 0)[None], sd, "ocr_distri_head.conv_bn_dropout.0",
                              "ocr_distri_head.conv_bn_dropout.1.0")[0]              # (mid, N)
    out = sd["cls_head.weight"][:, :, 0, 0] @ fused + sd["cls_head.bias"][:, None]    # (K, N)

    torch.testing.assert_close(got["aux"].double().reshape(1, n_cls, -1), aux, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["out"].double().reshape(n_cls, -1), out, atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_gradient():
    torch.manual_seed(0)
    head = OCRHead(S_CHANNELS, num_classes=19, ocr_mid_channels=64, ocr_key_channels=32).train()
    out = head(branches(S_CHANNELS, h=8, w=12))
    target = torch.randint(0, 19, (2, 8, 12))
    loss = F.cross_entropy(out["out"], target) + 0.4 * F.cross_entropy(out["aux"], target)
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _hand_param_count(c_in: int, k: int, mid: int = 512, key: int = 256) -> int:
    conv = lambda i, o, ks=1: i * o * ks * ks + o  # noqa: E731  (all OCR convs have a bias)
    bn = lambda c: 2 * c  # noqa: E731
    conv3x3 = conv(c_in, mid, 3) + bn(mid)
    aux = conv(c_in, mid, 3) + bn(mid) + conv(mid, k)
    f_pixel = conv(mid, key) + bn(key) + conv(key, key) + bn(key)
    f_object = f_pixel
    f_down = conv(mid, key) + bn(key)
    f_up = conv(key, mid) + bn(mid)
    fuse = conv(2 * mid, mid) + bn(mid)
    cls = conv(mid, k)
    return conv3x3 + aux + f_pixel + f_object + f_down + f_up + fuse + cls


@pytest.mark.parametrize("channels,k,expected", [
    (S_CHANNELS, 19, 5_632_806),               # HRT_SMALL_OCR_V2 head, Cityscapes
    ((78, 156, 312, 624), 150, 12_126_252),    # HRT_BASE_OCR_V2 head, ADE20K
])
def test_param_count_by_hand(channels, k, expected):
    head = OCRHead(channels, num_classes=k)
    n = sum(p.numel() for p in head.parameters())
    assert n == _hand_param_count(sum(channels), k) == expected

"""SegmentationTask: losses against hand computations, OHEM against a sort-based reference, sliding window and
flip/multi-scale test properties, padded validation batches, and a tiny HRNet that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrformer.data.segmentation import seg_collate
from hrformer.models import build_backbone
from hrformer.models.heads import OCRHead, UpsampleConcatHead
from hrformer.tasks.segmentation import (
    SegmentationLoss,
    SegmentationTask,
    SlidingWindowInference,
    WholeInference,
    ohem_cross_entropy,
)

IGNORE = 255


def manual_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over non-ignored pixels of -w[y] log softmax(logits)[y] / mean w[y] (PyTorch's weighted mean)."""
    logp = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    keep = t != IGNORE
    nll = -logp[keep].gather(1, t[keep, None])[:, 0]
    w = torch.ones_like(nll) if weight is None else weight[t[keep]]
    return (w * nll).sum() / w.sum()


def up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def test_loss_upsamples_and_weights_the_auxiliary_output():
    g = torch.Generator().manual_seed(0)
    out, aux = torch.randn(2, 5, 4, 6, generator=g), torch.randn(2, 5, 4, 6, generator=g)
    target = torch.randint(0, 5, (2, 16, 24), generator=g)
    target[:, :3] = IGNORE
    loss, parts = SegmentationLoss(aux_weight=0.4)({"out": out, "aux": aux}, target)
    expected_out, expected_aux = manual_ce(up(out, (16, 24)), target), manual_ce(up(aux, (16, 24)), target)
    assert parts["out"] == pytest.approx(expected_out.item(), rel=1e-5)
    assert parts["aux"] == pytest.approx(expected_aux.item(), rel=1e-5)
    assert loss == pytest.approx((expected_out + 0.4 * expected_aux).item(), rel=1e-5)
    plain, parts = SegmentationLoss()(out, target)  # a tensor head output: no auxiliary term
    assert set(parts) == {"out"} and plain == pytest.approx(expected_out.item(), rel=1e-5)


def test_class_weights():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(1, 3, 8, 8, generator=g), torch.randint(0, 3, (1, 8, 8), generator=g)
    w = torch.tensor([0.5, 1.0, 2.0])
    loss, _ = SegmentationLoss(class_weights=w.tolist())(logits, target)
    assert loss == pytest.approx(manual_ce(logits, target, w).item(), rel=1e-5)
    assert "class_weights" not in SegmentationLoss(class_weights=w.tolist()).state_dict()


def ohem_reference(logits: np.ndarray, target: np.ndarray, thresh: float, min_kept: int) -> float:
    """The official HRNet OhemCrossEntropy, step by step in numpy (sort, threshold, strict <)."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    t = target.reshape(-1)
    lp = logp.transpose(0, 2, 3, 1).reshape(-1, logits.shape[1])
    valid = t != IGNORE
    p = np.exp(lp[valid, t[valid]])
    losses = -lp[valid, t[valid]]
    order = np.argsort(p, kind="stable")
    p_sorted, l_sorted = p[order], losses[order]
    threshold = max(p_sorted[min(min_kept, len(p_sorted) - 1)], thresh)
    return float(l_sorted[p_sorted < threshold].mean())


@pytest.mark.parametrize("thresh,min_kept", [(0.7, 10), (0.7, 500), (0.2, 50), (0.99, 0)])
def test_ohem_equals_the_official_computation(thresh, min_kept):
    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(2, 4, 12, 12, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 12, 12), generator=g)
    target[0, :4] = IGNORE
    ours = ohem_cross_entropy(logits, target, thresh, min_kept)
    assert ours.item() == pytest.approx(ohem_reference(logits.numpy(), target.numpy(), thresh, min_kept), rel=1e-9)


def test_ohem_keeps_everything_when_min_kept_exceeds_the_pixels():
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(1, 3, 6, 6, generator=g), torch.randint(0, 3, (1, 6, 6), generator=g)
    loss = SegmentationLoss(ohem=True, ohem_thresh=0.0, ohem_min_kept=10_000)(logits, target)[0]
    # the easiest pixel sets the threshold and is dropped (strict <): the mean over the other 35
    pixel = F.cross_entropy(logits, target, reduction="none").reshape(-1)
    p = torch.exp(-pixel)
    assert loss.item() == pytest.approx(pixel[p < p.max()].mean().item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------ inference
class Pointwise(nn.Module):
    """A 1x1 conv at full resolution: every pixel's logits depend on that pixel only."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return self.conv(x)


class Asymmetric(nn.Module):
    """A conv with a left-right asymmetric kernel, output at 1/2 resolution."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 5, stride=2, padding=2)

    def forward(self, x):
        return {"out": self.conv(x), "aux": self.conv(x)}


def test_windows_cover_the_image():
    inf = SlidingWindowInference((16, 24), (10, 15))
    for h, w in [(40, 50), (16, 24), (10, 7), (17, 25)]:
        cover = np.zeros((h, w), int)
        for y1, y2, x1, x2 in inf.windows(h, w):
            assert y2 - y1 == min(16, h) and x2 - x1 == min(24, w) and y1 >= 0 and x1 >= 0
            cover[y1:y2, x1:x2] += 1
        assert cover.min() >= 1


@pytest.mark.parametrize("crop,stride,batch", [((16, 24), (10, 15), None), ((20, 20), (20, 20), 3),
                                               ((64, 64), None, None)])
def test_sliding_window_of_a_pointwise_model_equals_whole_image(crop, stride, batch):
    model, images = Pointwise(), torch.randn(2, 3, 37, 45)
    whole = WholeInference()(model, images)
    slide = SlidingWindowInference(crop, stride, batch)(model, images)
    assert torch.allclose(slide, whole, atol=1e-5)


def test_flip_test_is_flip_equivariant_and_differs_from_single_pass():
    images = torch.randn(1, 3, 24, 32)
    task = SegmentationTask(4, flip=True)
    model = Asymmetric()
    with torch.no_grad():
        probs = task.predict(model, images)
        flipped = task.predict(model, images.flip(-1))
        single = SegmentationTask(4).predict(model, images)
    assert probs.shape == (1, 4, 24, 32)
    assert torch.allclose(probs.sum(1), torch.ones(1, 24, 32), atol=1e-5)
    assert torch.allclose(flipped, probs.flip(-1), atol=1e-5)
    assert (probs - single).abs().max() > 1e-3


def test_multiscale_averages_the_probabilities_of_each_scale():
    images = torch.randn(1, 3, 24, 32)
    model = Asymmetric()
    with torch.no_grad():
        ms = SegmentationTask(4, scales=(0.5, 1.0, 1.5)).predict(model, images)
        expected = 0
        for s in (0.5, 1.0, 1.5):
            x = F.interpolate(images, size=(round(24 * s), round(32 * s)), mode="bilinear", align_corners=False)
            expected = expected + up(F.softmax(up(model(x)["out"], x.shape[-2:]), 1), (24, 32)) / 3
    assert torch.allclose(ms, expected, atol=1e-5)


def test_validation_of_a_padded_batch_equals_image_by_image():
    """Images of different sizes in one padded batch are predicted unpadded, at their label resolution."""
    model = Asymmetric(3)
    g = torch.Generator().manual_seed(4)
    sizes = [(16, 20), (12, 28), (16, 20)]
    images = [torch.randn(3, h, w, generator=g) for h, w in sizes]
    labels = [torch.randint(0, 3, (2 * h, 2 * w), generator=g).to(torch.uint8) for h, w in sizes]
    labels[1][:5] = IGNORE
    batch = seg_collate([{"image": i, "label": lbl, "name": str(k)} for k, (i, lbl) in
                         enumerate(zip(images, labels, strict=True))])
    task = SegmentationTask(3)
    with torch.no_grad():
        out = task.validation_step(model, batch)
    n_valid = sum(int((lbl != IGNORE).sum()) for lbl in labels)
    assert int(task.metric.confmat.sum()) == n_valid
    nll = 0.0
    for img, lbl, pred in zip(images, labels, out["pred"], strict=True):
        single = SegmentationTask(3)
        with torch.no_grad():
            probs = up(single.predict(model, img[None]), lbl.shape)
        assert torch.equal(pred, probs[0].argmax(0).to(torch.uint8))
        nll += F.nll_loss(probs.clamp_min(1e-12).log(), lbl[None].long(), ignore_index=IGNORE, reduction="sum")
    assert out["loss"].item() == pytest.approx(nll.item() / n_valid, rel=1e-5)


# ------------------------------------------------------------------------------------------------ learning
def shapes_batch(n: int = 4, size: int = 64, seed: int = 0):
    """Images with a bright disc (class 1) and a dark square (class 2) on noise (class 0)."""
    g = np.random.default_rng(seed)
    images = g.normal(0, 0.3, (n, 3, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), np.int64)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = *g.integers(12, size - 12, 2), g.integers(6, 11)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        y0, x0 = g.integers(0, size - 14, 2)
        labels[i][disc], images[i][:, disc] = 1, 1.5
        labels[i, y0:y0 + 14, x0:x0 + 14], images[i, :, y0:y0 + 14, x0:x0 + 14] = 2, -1.5
    labels[:, :, :4] = IGNORE
    return torch.from_numpy(images), torch.from_numpy(labels)


@pytest.mark.parametrize("head", ["upsample_concat", "ocr"])
def test_a_tiny_hrnet_learns_and_its_miou_rises(head):
    torch.manual_seed(0)
    backbone = build_backbone("hrnet_w18_small_v1")
    head_module = (UpsampleConcatHead(backbone.out_channels, 3) if head == "upsample_concat"
                   else OCRHead(backbone.out_channels, 3, ocr_mid_channels=32, ocr_key_channels=16))
    model = nn.Sequential()
    model.forward = lambda x: head_module(backbone(x))
    params = list(backbone.parameters()) + list(head_module.parameters())
    task = SegmentationTask(3, loss=SegmentationLoss(aux_weight=0.4))
    images, labels = shapes_batch()
    batch = {"image": images, "label": labels}

    def evaluate() -> float:
        backbone.eval(), head_module.eval()
        with torch.no_grad():
            task.validation_step(model, batch)
        backbone.train(), head_module.train()
        return task.compute_metrics()["val/mIoU"]

    before = evaluate()
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(25):
        loss, logs = task.training_loss(model(images), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if head == "ocr":
            assert set(logs) == {"train/loss", "train/loss_out", "train/loss_aux"}
            assert logs["train/loss"] == pytest.approx((logs["train/loss_out"] + 0.4 * logs["train/loss_aux"]).item())
    after = evaluate()
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert after > before + 0.2 and after > 0.5, (before, after)

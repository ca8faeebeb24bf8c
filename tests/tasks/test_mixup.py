"""Mixup / CutMix batches and their soft targets; the soft-target loss against torch's label-smoothed CE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrformer.tasks.classification import soft_target_cross_entropy
from hrformer.tasks.mixup import MixupCutmix, smooth_one_hot


@pytest.fixture
def batch():
    torch.manual_seed(0)
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 20, 30).clone()  # value = index
    return images, torch.tensor([0, 1, 2, 3, 4, 0])


def test_smooth_one_hot():
    t = smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    torch.testing.assert_close(t, torch.tensor([[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]]))


def test_mixup_blends_each_image_with_its_mirror(batch):
    images, labels = batch
    before = images.clone()
    mixed, targets, lam = MixupCutmix(mixup_alpha=0.8, cutmix_alpha=0.0)(images, labels, 5, smoothing=0.1)
    assert 0.0 < lam < 1.0 and torch.equal(images, before)
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.flip(0))
    expected = lam * smooth_one_hot(labels, 5, 0.1) + (1 - lam) * smooth_one_hot(labels.flip(0), 5, 0.1)
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


def test_cutmix_pastes_a_box_and_lam_is_the_kept_area(batch):
    images, labels = batch
    for _ in range(20):
        mixed, targets, lam = MixupCutmix(mixup_alpha=0.0, cutmix_alpha=1.0)(images, labels, 5)
        pasted = mixed[0, 0] == images.flip(0)[0, 0]   # sample 0 receives sample 5's pixels (value 5)
        kept = mixed[0, 0] == images[0, 0]
        assert torch.equal(pasted | kept, torch.ones_like(kept))
        assert lam == pytest.approx(kept.float().mean().item())
        if pasted.any():  # the pasted region is one rectangle
            rows, cols = torch.nonzero(pasted, as_tuple=True)
            assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        # soft targets weight each label by its share of the pixels
        torch.testing.assert_close(targets[0, 0], torch.tensor(1.0))  # labels 0 and 0: both shares on class 0
        torch.testing.assert_close(targets[1, 1], torch.tensor(lam))
        torch.testing.assert_close(targets[1, 4], torch.tensor(1 - lam))


def test_switching_and_mixing_probabilities():
    torch.manual_seed(1)
    mix = MixupCutmix(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
    draws = [mix.sample() for _ in range(2000)]
    cutmix = np.array([c for _, c in draws])
    lams = np.array([lam for lam, _ in draws])
    assert abs(cutmix.mean() - 0.5) < 0.05
    mixup_lams = lams[~cutmix]  # Beta(0.8, 0.8): mean 1/2, variance ab / ((a + b)^2 (a + b + 1))
    assert abs(mixup_lams.mean() - 0.5) < 0.03 and abs(mixup_lams.var() - 0.64 / (2.56 * 2.6)) < 0.015
    assert abs(lams[cutmix].var() - 1 / 12) < 0.015  # Beta(1, 1) = U(0, 1)
    half = MixupCutmix(prob=0.3)
    assert abs(np.mean([half.sample()[0] < 1.0 for _ in range(2000)]) - 0.3) < 0.04
    assert MixupCutmix(prob=0.0).sample() == (1.0, False) and not MixupCutmix(0.0, 0.0).enabled


def test_soft_target_loss_equals_label_smoothed_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 7), torch.randint(0, 7, (16,))
    soft = soft_target_cross_entropy(logits, smooth_one_hot(labels, 7, 0.1))
    torch.testing.assert_close(soft, F.cross_entropy(logits, labels, label_smoothing=0.1))

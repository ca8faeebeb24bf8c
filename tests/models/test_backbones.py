"""Shapes, strides, gradients, options and errors of every registered backbone."""

from __future__ import annotations

import pytest
import torch

from hrformer.models import build_backbone, list_backbones

EXPECTED_CHANNELS = {
    "hrnet_w18_small_v1": (16, 32, 64, 128),
    "hrnet_w18_small_v2": (18, 36, 72, 144),
    "hrnet_w18": (18, 36, 72, 144),
    "hrnet_w32": (32, 64, 128, 256),
    "hrnet_w48": (48, 96, 192, 384),
    "hrformer_t": (18, 36, 72, 144),
    "hrformer_s": (32, 64, 128, 256),
    "hrformer_b": (78, 156, 312, 624),
}


def test_registry_lists_every_variant():
    assert set(EXPECTED_CHANNELS) <= set(list_backbones())
    assert set(list_backbones("hrformer")) == {"hrformer_t", "hrformer_s", "hrformer_b"}


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANNELS))
def test_shapes_and_strides(name):
    model = build_backbone(name).eval()
    assert model.out_channels == EXPECTED_CHANNELS[name]
    assert model.strides == (4, 8, 16, 32)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        outs = model(x)
    assert [tuple(o.shape) for o in outs] == [
        (2, c, 96 // s, 64 // s) for c, s in zip(model.out_channels, model.strides, strict=True)]


@pytest.mark.parametrize("name", ["hrformer_t", "hrnet_w18_small_v1"])
def test_single_output_option(name):
    model = build_backbone(name, multiscale_output=False).eval()
    assert model.out_channels == EXPECTED_CHANNELS[name][:1] and model.strides == (4,)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape == (1, EXPECTED_CHANNELS[name][0], 16, 16)


def test_sizes_not_divisible_by_32_or_window():
    """HRFormer pads windows and resizes fused maps when branch sizes are odd."""
    model = build_backbone("hrformer_t", fuse_upsample="bilinear").eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 100, 76))
    assert [tuple(o.shape[-2:]) for o in outs] == [(25, 19), (13, 10), (7, 5), (4, 3)]


@pytest.mark.parametrize("name", ["hrformer_t", "hrnet_w18_small_v1"])
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(0)
    model = build_backbone(name).train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing[:5]}"


def test_drop_path_schedule_matches_official():
    """Linear 0..rate over the 12 (T) block positions; module m, block k of a stage share one rate."""
    model = build_backbone("hrformer_t", drop_path_rate=0.1)
    rates = torch.linspace(0, 0.1, 12).tolist()
    stage3_module2_branch1_block1 = model.stages[1][2].branches[1][1]
    assert stage3_module2_branch1_block1.drop_path.p == pytest.approx(rates[2 + 2 * 2 + 1])
    assert model.stages[0][0].branches[0][0].drop_path.p == 0.0
    assert model.stages[2][1].branches[3][1].drop_path.p == pytest.approx(0.1)


def test_drop_path_is_stochastic_in_train_and_identity_in_eval():
    model = build_backbone("hrformer_t", drop_path_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(x)[0], model(x)[0]
    torch.testing.assert_close(a, b)
    model.train()
    with torch.no_grad():
        c, d = model(x)[0], model(x)[0]
    assert not torch.allclose(c, d)


def test_unknown_backbone_names_the_registered_ones():
    with pytest.raises(KeyError, match="hrformer_s"):
        build_backbone("hrformer_xl")


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError, match="window"):
        build_backbone("hrnet_w32", window=7)


def test_bad_fuse_upsample_is_an_error():
    with pytest.raises(ValueError, match="fuse_upsample"):
        build_backbone("hrnet_w18_small_v1", fuse_upsample="cubic")

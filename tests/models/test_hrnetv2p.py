"""HRNetV2p: the HRNetV2 representation and its average-pooled levels, as a backbone option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrformer.models import build_backbone


@pytest.fixture(scope="module")
def branches_and_levels():
    torch.manual_seed(0)
    branches = build_backbone("hrnet_w18_small_v1").eval()
    v2p = build_backbone("hrnet_w18_small_v1", output="v2p").eval()
    v2p.load_state_dict(branches.state_dict(), strict=True)  # the option adds no parameters
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        return branches(x), v2p(x), v2p


def test_levels_channels_and_strides(branches_and_levels):
    _, levels, model = branches_and_levels
    assert model.out_channels == (240,) * 5 and model.strides == (4, 8, 16, 32, 64)
    assert [tuple(t.shape) for t in levels] == [(2, 240, 32 // 2**k, 24 // 2**k) for k in range(5)]


def test_level0_is_the_hrnetv2_concatenation(branches_and_levels):
    feats, levels, _ = branches_and_levels
    rep = levels[0]
    torch.testing.assert_close(rep[:, :16], feats[0])
    offset = 16
    for f in feats[1:]:
        up = F.interpolate(f, size=(32, 24), mode="bilinear", align_corners=False)
        torch.testing.assert_close(rep[:, offset: offset + f.shape[1]], up)
        offset += f.shape[1]
    assert offset == 240


def test_coarser_levels_are_average_pools_of_level0(branches_and_levels):
    _, levels, _ = branches_and_levels
    for k in range(1, 5):
        torch.testing.assert_close(levels[k], F.avg_pool2d(levels[0], 2**k, 2**k))
    # one 4x downsampled cell is the mean of its 16 level-0 cells
    torch.testing.assert_close(levels[2][:, :, 1, 2], levels[0][:, :, 4:8, 8:12].mean(dim=(2, 3)))


def test_v2_option_and_errors():
    model = build_backbone("hrnet_w18_small_v1", output="v2").eval()
    assert model.out_channels == (240,) and model.strides == (4,)
    with pytest.raises(ValueError, match="multiscale_output=True"):
        build_backbone("hrnet_w32", output="v2p", multiscale_output=False)
    with pytest.raises(ValueError, match="output must be one of"):
        build_backbone("hrnet_w32", output="fpn")

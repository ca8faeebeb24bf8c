"""Our models compute what the official code computes, for every family and task (tests/reference/, made by
scripts/official_references.py from the official files imported unchanged).

Each reference stores the official key names and shapes, the input's seed and the official outputs.  The test
regenerates the deterministic weights under the official names, converts them with our converter (which also
detects the layout: code base, task, fusion upsampling, align_corners, ...), builds our model from that layout,
loads it strictly and compares the outputs within 1e-4 of the reference's scale.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrformer.models import build_backbone, convert_official
from hrformer.models.task_models import build_from_layout
from tests.conftest import max_rel_err
from tests.official_formats import REFERENCES, official_weights, reference, reference_dtype, reference_input

TOL = 1e-4
SLOW = {"hrformer_b_cls", "hrnetv2_w48_seg_ocr_branch", "hrnet_w48_ocr_seg", "hrnet_w32_cls", "hrnet_w48_cls",
        "uniformer_b_cls"}


def our_outputs(ref: dict, converted) -> dict[str, torch.Tensor]:
    """Our model, built from the detected layout, on the reference's input, under the reference's output names."""
    x, dtype = reference_input(ref), reference_dtype(ref)
    layout = converted.layout
    if layout.task is None:   # a backbone reference (pose backbones whose 1x1 / deconv head is mmpose's, not theirs)
        model = build_backbone(ref["arch"], **layout.backbone_options).eval()
        model.load_state_dict(converted.backbone, strict=True)
        with torch.no_grad():
            return {f"features.{i}": f.float() for i, f in enumerate(model.to(dtype)(x))}
    model = build_from_layout(ref["arch"], layout, ref["num_classes"]).eval()
    model.load_state_dict(converted.state_dict(), strict=True)
    with torch.no_grad():
        out = model.to(dtype)(x)
    if isinstance(out, dict):   # OCR heads: logits at 1/4; the HRFormer seg net upsamples them to the input
        size = ref["outputs"]["out"].shape[-2:]
        return {k: F.interpolate(v, size=size, mode="bilinear", align_corners=True) if v.shape[-2:] != size else v
                for k, v in out.items()}
    (name,) = ref["outputs"]   # "logits" or "heatmaps"
    return {name: out}


NAMES = sorted(p.stem for p in REFERENCES.glob("*.pt"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_matches_the_official_code(name):
    torch.set_num_threads(1)
    ref = reference(name)
    converted = convert_official({"state_dict": official_weights(ref)}, ref["arch"], **ref["convert"])
    assert converted.layout.task == (None if "features.0" in ref["outputs"] else ref["task"])
    outputs = our_outputs(ref, converted)
    assert outputs.keys() == ref["outputs"].keys()
    for key, expected in ref["outputs"].items():
        assert outputs[key].shape == expected.shape, key
        err = max_rel_err(outputs[key], expected)
        print(f"{name} {key}: max relative error {err:.2e}")
        assert err < TOL, f"{name} {key}: {err:.2e}"

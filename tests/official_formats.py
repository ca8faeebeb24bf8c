"""Official-format checkpoint files made with the deterministic weights (hrformer.models.deterministic) under the
official key names of tests/reference/, in the containers each official code base saves."""

from __future__ import annotations

from pathlib import Path

import torch

from hrformer.models.deterministic import deterministic_input, deterministic_state_dict, spec_from_list
from tests.conftest import REPO_ROOT

REFERENCES = REPO_ROOT / "tests" / "reference"


def reference(name: str) -> dict:
    return torch.load(REFERENCES / f"{name}.pt", weights_only=True)


def official_weights(ref: dict) -> dict[str, torch.Tensor]:
    """The official state dict of a reference (official names, deterministic values)."""
    return deterministic_state_dict(spec_from_list(ref["keys"]), seed=ref["weight_seed"])


def reference_dtype(ref: dict) -> torch.dtype:
    """The dtype both sides computed in (float32, or float64 for an ill-conditioned reference)."""
    return getattr(torch, ref["dtype"])


def reference_input(ref: dict) -> torch.Tensor:
    return deterministic_input(ref["input_seed"], ref["input_shape"]).to(reference_dtype(ref))


# how each code base saves: state dict -> file content
CONTAINERS = {
    # HRNet-Image-Classification tools/train.py: checkpoint.pth.tar (model.module.state_dict(), the model's name)
    "hrnet-cls-tar": lambda sd: {"epoch": 100, "model": "cls_hrnet", "state_dict": dict(sd), "perf": 0.768,
                                 "optimizer": {}},
    # deep-high-resolution-net / ImageNet model zoo / HRNet-Image-Classification final_state: the plain state dict
    "plain": dict,
    # HRNet-Semantic-Segmentation: FullModel(model, loss) -> model.* + the criterion's class weights
    "hrnet-seg": lambda sd: {"epoch": 484, "best_mIoU": 0.809, "optimizer": {},
                             "state_dict": {**{f"model.{k}": v for k, v in sd.items()},
                                            "loss.criterion.weight": torch.ones(19)}},
    # HRFormer / UniFormer classification (Swin code base): {'model': ...}
    "swin-cls": lambda sd: {"model": dict(sd), "optimizer": {}, "lr_scheduler": {}, "max_accuracy": 81.2,
                            "epoch": 299, "config": "hrt_small"},
    # HRFormer segmentation (openseg save_net)
    "openseg": lambda sd: {"config_dict": {"network": {"backbone": "hrt_small"}},
                           "state_dict": {f"module.{k}": v for k, v in sd.items()}},
    # mmpose / mmseg (mmcv save_checkpoint); the keys already carry backbone. / keypoint_head. / neck. ...
    "mmcv": lambda sd: {"meta": {"epoch": 210}, "state_dict": dict(sd)},
}


def save_official(path: Path, state_dict: dict, container: str) -> Path:
    torch.save(CONTAINERS[container](state_dict), path)
    return path

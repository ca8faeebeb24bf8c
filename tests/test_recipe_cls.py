"""The optimisation side of the classification recipe: parameter groups, LR scaled by the total batch, cosine
warm-up as a fraction of training."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch

from hrformer.models import build_backbone
from hrformer.models.heads import classification_head
from hrformer.module import HRLitModule, param_groups
from hrformer.optim import warmup_cosine
from hrformer.tasks.classification import ClassificationTask


def test_no_weight_decay_on_norms_biases_and_bias_tables():
    with torch.device("meta"):
        backbone = build_backbone("hrformer_t")
        model = torch.nn.ModuleDict({"backbone": backbone, "head": classification_head(
            "hrformer_t", backbone.out_channels, 10)})
    decay, no_decay = param_groups(model, 0.05, no_decay_norm_and_bias=True)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decayed | exempt == set(names.values()) and not decayed & exempt
    tables = {n for n in names.values() if n.endswith("relative_position_bias_table")}
    assert tables and tables <= exempt  # 2-D, yet exempt
    assert {n for n in exempt - tables if not n.endswith((".bias", ".weight"))} == set()
    assert all(model.get_parameter(n).ndim == 1 for n in exempt - tables)  # norm weights and biases
    assert all(model.get_parameter(n).ndim > 1 for n in decayed)
    assert "head.classifier.weight" in decayed and "head.classifier.bias" in exempt


@pytest.mark.parametrize(("batch", "devices", "accumulate", "expected"), [(128, 8, 1, 1e-3), (64, 2, 2, 2.5e-4)])
def test_lr_is_scaled_to_the_total_batch(batch, devices, accumulate, expected):
    backbone = build_backbone("hrnet_w18_small_v1")
    module = HRLitModule(backbone, functools.partial(classification_head, "hrnet_w18_small_v1",
                                                     num_classes=4), ClassificationTask(4),
                         optimizer=functools.partial(torch.optim.AdamW, lr=5e-4),
                         scheduler=functools.partial(warmup_cosine, warmup_fraction=0.1, warmup_ratio=1e-3),
                         weight_decay=0.05, lr_reference_batch=512)
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=batch), world_size=devices,
                                      accumulate_grad_batches=accumulate, estimated_stepping_batches=300)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([expected] * 2)
    assert scheduler.get_last_lr() == pytest.approx([expected * 1e-3] * 2)  # warm-up starts at 1e-3 of it


def test_cosine_warmup_fraction():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=300, warmup_fraction=20 / 300, warmup_ratio=1e-3, min_ratio=0.01)
    lrs = []
    for _ in range(300):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[10] == pytest.approx(1e-3 + (1 - 1e-3) * 10 / 20)
    assert lrs[20] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert lrs[160] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 140 / 280)))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)

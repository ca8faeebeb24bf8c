"""Compute counts agree with the official models and papers; ``scripts/complexity.py --json`` works.

Reference GMACs are ``FlopCounterMode`` totals / 2 / 1e9 of the official model code (see ../shared/docs,
hrformer-facts.md section 5 and hrnet-family-facts.md section 3).  The official HRFormer pose numbers are
of the backbone alone; the 1x1 head adds < 0.1%.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

import pytest
from torch import nn

from hrformer.models.task_models import build_task_model, supported_tasks
from hrformer.utils.complexity import Complexity, count_gmacs, count_params, measure

from .conftest import REPO_ROOT, load_script

REL_TOL = 0.01

OFFICIAL_GMACS = {
    ("hrformer_t", "pose", (256, 192)): 1.484,
    ("hrformer_s", "pose", (256, 192)): 3.243,
    ("hrformer_b", "pose", (256, 192)): 13.903,
    ("hrnet_w32", "pose", (256, 192)): 7.645,
    ("hrnet_w48", "pose", (256, 192)): 15.692,
    ("hrformer_t", "cls", (224, 224)): 1.708,
    ("hrformer_s", "cls", (224, 224)): 3.364,
    ("hrformer_b", "cls", (224, 224)): 13.308,
    ("hrnet_w18_small_v1", "cls", (224, 224)): 1.602,
    ("hrnet_w18_small_v2", "cls", (224, 224)): 2.596,
    ("hrnet_w18", "cls", (224, 224)): 4.284,
    ("hrnet_w32", "cls", (224, 224)): 8.921,
    ("hrnet_w48", "cls", (224, 224)): 17.278,
    ("hrnet_w48", "seg", (512, 1024)): 186.88,
    ("uniformer_s", "cls", (224, 224)): 3.632,
    ("uniformer_s_plus", "cls", (224, 224)): 4.201,
    ("uniformer_b", "cls", (224, 224)): 8.249,
    ("uniformer_s", "pose", (256, 192)): 4.67,
    ("uniformer_b", "pose", (256, 192)): 9.19,
}

# Lite-HRNet with its 1x1 pose head: (official GMACs, official torchstat total / 1e6, published "FLOPs" in M =
# torchstat total / 2^20), hrnet-family-facts.md section 3 and the Lite-HRNet README.
LITEHRNET = {
    ("litehrnet_18", (256, 192)): (0.2423, 215.20, 205.2),
    ("naive_litehrnet_18", (256, 192)): (0.2110, 204.22, 194.8),
}

# Published "GFLOPs" of the HRNet repositories: multiply-adds / 2^30.
HRNET_PUBLISHED = {
    ("hrnet_w32", "pose", (256, 192)): 7.1,
    ("hrnet_w48", "pose", (256, 192)): 14.6,
    ("hrnet_w18", "cls", (224, 224)): 3.99,
    ("hrnet_w48", "cls", (224, 224)): 16.1,
}

# HRFormer pose paper: conv + q/k/v projection MACs / 1e9, published to one decimal.
HRFORMER_POSE_PUBLISHED = {"hrformer_t": 1.3, "hrformer_s": 2.8, "hrformer_b": 12.2}


@cache
def measured(name: str, task: str, hw: tuple[int, int]) -> Complexity:
    return measure(lambda: build_task_model(name, task), hw)


@pytest.mark.parametrize(("key", "expected"), list(OFFICIAL_GMACS.items()), ids=lambda v: str(v))
def test_gmacs_match_official_models(key, expected):
    assert measured(*key).gmacs == pytest.approx(expected, rel=REL_TOL)


@pytest.mark.parametrize(("key", "published"), list(HRNET_PUBLISHED.items()), ids=lambda v: str(v))
def test_hrnet_convention_reproduces_published(key, published):
    assert measured(*key).gmacs_2_30 == pytest.approx(published, rel=0.005)


@pytest.mark.parametrize(("name", "published"), list(HRFORMER_POSE_PUBLISHED.items()))
def test_hrformer_pose_paper_convention(name, published):
    c = measured(name, "pose", (256, 192))
    assert c.conv_qkv_gmacs == pytest.approx(published, rel=0.02)
    assert c.conv_qkv_gmacs < c.gmacs  # out_proj and the attention products are left out


@pytest.mark.parametrize(("key", "expected"), list(LITEHRNET.items()), ids=lambda v: str(v))
def test_litehrnet_gmacs_and_the_papers_torchstat_convention(key, expected):
    gmacs, torchstat_m, published = expected
    c = measure(lambda: build_task_model(key[0], "pose"), key[1], device="cpu")  # no attention: cpu is exact
    assert c.gmacs == pytest.approx(gmacs, rel=REL_TOL)
    assert c.torchstat / 1e6 == pytest.approx(torchstat_m, abs=0.01)
    assert round(c.torchstat_mflops, 1) == published
    assert c.torchstat_mflops < c.gmacs * 1e3  # the paper's count misses the repeated fuse calls and functional ops


def test_the_complexity_table_rows_of_the_new_families():
    script = load_script("complexity")
    assert supported_tasks("litehrnet_30") == ("pose",)
    assert script.input_sizes("uniformer_b", "pose") == ((256, 192), (384, 288), (448, 320))
    assert script.input_sizes("hrformer_t", "pose") == ((256, 192), (384, 288))
    for model, task, hw in [("litehrnet_18", "pose", "384x288"), ("uniformer_s_plus", "cls", "224x224"),
                            ("uniformer_b", "pose", "448x320")]:
        assert (model, task, hw) in script.PUBLISHED
    row = {"model": "litehrnet_18", "task": "pose", "head": "heatmap-1x1", "input": "256x192", "params": 1130769,
           "gmacs": 0.2423, "ours_in_paper_convention": 205.23,
           "published": {**script.PUBLISHED[("litehrnet_18", "pose", "256x192")]}}
    cells = script.table_cells(row)
    assert cells[7:11] == ["205.23 M", "205.2 M", "1.000", "1.1"]
    with pytest.raises(ValueError, match="no published cls model"):
        build_task_model("litehrnet_18", "cls")


def test_attention_products_counted_on_meta():
    assert measured("hrformer_t", "pose", (256, 192)).flops_by_op.get("aten.bmm", 0) > 0


def test_count_functions_on_a_single_conv():
    make = lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_params(make()) == 8 * 3 * 9
    assert count_gmacs(make, (10, 12)) == pytest.approx(8 * 3 * 9 * 10 * 12 / 1e9)


def test_script_json(tmp_path):
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "complexity.py"), "--models", "hrformer_t",
           "--tasks", "pose", "--json", str(out), "--markdown", str(tmp_path / "c.md")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    rows = json.loads(out.read_text())
    assert {r["input"] for r in rows} == {"256x192", "384x288"}
    for r in rows:
        assert {"model", "task", "input", "params", "gmacs"} <= r.keys()
        assert (r["model"], r["task"]) == ("hrformer_t", "pose")
        assert isinstance(r["params"], int) and isinstance(r["gmacs"], float)
    row = next(r for r in rows if r["input"] == "256x192")
    assert row["gmacs"] == pytest.approx(OFFICIAL_GMACS[("hrformer_t", "pose", (256, 192))], rel=REL_TOL)
    assert "hrformer_t" in (tmp_path / "c.md").read_text()

"""A two-point ``-m`` sweep gives two run directories with metrics.json and two results-store records;
scripts/aggregate.py ranks them by the key metric; scripts/tables.py renders the paper tables from the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import read_results
from tests.conftest import REPO_ROOT, load_script
from tests.test_train import SMALL, run

aggregate = load_script("aggregate")
tables = load_script("tables")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two jobs in one process, logged to W&B offline (no network): each must get its own W&B run."""
    root = tmp_path_factory.mktemp("sweep")
    args = [*SMALL, "logger=wandb", "trainer.max_epochs=1", "callbacks=none", "threads=1", "optimizer.lr=1e-3,1e-7",
            f"hydra.sweep.dir={root / 'multirun'}", f"results_file={root / 'results.jsonl'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1",
           "WANDB_DIR": str(root)}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "hrformer.train", "-m", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_two_point_sweep_gives_two_run_directories_and_records(sweep):
    jobs = sorted(p for p in (sweep / "multirun").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    metrics = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert all(0.0 <= m["val/AP"] <= 1.0 for m in metrics)
    records = read_results(sweep / "results.jsonl")
    assert [r["run_dir"] for r in records] == [str(j) for j in jobs]
    assert [r["metrics"] for r in records] == metrics
    assert records[0]["config_hash"] != records[1]["config_hash"]   # the lr differs
    assert {r["total_batch"] for r in records} == {4} and {r["devices"] for r in records} == {1}


def test_each_sweep_job_is_its_own_wandb_run_named_by_its_overrides(sweep):
    # a run without experiment= is named by its composition: <task>_<data>_<backbone>
    runs = [json.loads((sweep / "multirun" / job / "wandb_run.json").read_text()) for job in ("0", "1")]
    assert runs[0]["id"] != runs[1]["id"]   # wandb.finish() after each job: the second job did not reuse the first run
    assert {r["project"] for r in runs} == {"hrformer"}
    assert {r["group"] for r in runs} == {"pose_coco_synthetic_hrformer_t"}
    assert [r["name"].split("optimizer.lr=")[1].split(",")[0] for r in runs] == ["0.001", "1e-07"]
    assert all(r["name"].startswith("pose_coco_synthetic_hrformer_t:") and "data.root" not in r["name"] for r in runs)


def test_aggregate_ranks_the_jobs_by_the_key_metric(sweep, capsys):
    jobs, key = aggregate.aggregate(sweep / "multirun")
    assert key == "val/AP" and len(jobs) == 2
    values = [j["metrics"]["val/AP"] for j in jobs]
    assert values == sorted(values, reverse=True)
    assert aggregate.varying(jobs) == ["optimizer.lr"]
    assert aggregate.main([str(sweep / "multirun")]) == 0
    out = capsys.readouterr().out
    assert "| rank | optimizer.lr | val/AP |" in out and out.count("\n| 1 |") == 1


def test_aggregate_lists_unfinished_jobs_last(tmp_path):
    for name, metrics in (("0", None), ("1", {"val/AP": 0.2}), ("2", {"val/AP": 0.5})):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- seed={name}\n")
        (tmp_path / name / "config.yaml").write_text("task: {key_metric: val/AP, key_metric_mode: max}\n")
        if metrics:
            (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    jobs, _ = aggregate.aggregate(tmp_path)
    assert [j["job"].rsplit("/", 1)[-1] for j in jobs] == ["2", "1", "0"]
    assert "not finished" in aggregate.markdown(jobs, "val/AP").splitlines()[-1]


def test_tables_render_ours_paper_difference_and_mark_rows_not_run(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in [
        {"experiment": "pose_coco_hrformer_s_256x192", "kind": "train", "metrics": {"val/AP": 0.700},
         "git_commit": "a" * 40, "devices": 8},
        {"experiment": "pose_coco_hrformer_s_256x192", "kind": "eval", "metrics": {"val/AP": 0.745},
         "git_commit": "b" * 40, "devices": 1},   # the latest record wins
        {"experiment": "pose_coco_hrformer_s_256x192", "kind": "train", "metrics": {"val/AP": 0.01},
         "git_commit": "c" * 40, "devices": 1, "smoke": "trainer.max_epochs=1 (the recipe's: 210)"},   # but a smoke run
    ]) + "\n{truncated\n")
    text = tables.render_table("coco", tables.latest_results([results]), tables.load_complexity())
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| pose_")}
    assert set(rows) == {r["experiment"] for r in tables.load_rows("coco")}
    cells = [c.strip() for c in rows["pose_coco_hrformer_s_256x192"].strip("|").split("|")]
    assert cells[1:6] == ["7.8", "3.2", "74.5", "74.0", "+0.5"] and cells[6].startswith("eval bbbbbbbb")
    assert "not run" in rows["pose_coco_hrnet_w48_384x288"] and "63.6" in rows["pose_coco_hrnet_w48_384x288"]
    assert tables.main(["--list", "ade20k"]) == 0


def test_every_table_has_rows_and_renders(tmp_path):
    assert tables.main(["--all", "--results", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path)]) == 0
    for table in tables.TABLES:
        text = (tmp_path / f"{table}.md").read_text()
        assert text.count("not run") == len(tables.load_rows(table)) >= 3


def test_eval_only_with_an_experiment_evaluates_a_checkpoint_without_a_training_run(tmp_path):
    """`make table-* EVAL_ONLY=1`: a converted checkpoint ({"state_dict": ...}, no run directory) is evaluated
    with the experiment's configuration, recorded in the store and shown in the table."""
    import torch
    from hydra import compose, initialize_config_dir

    from hrformer.utils.run import build_module

    name = "pose_coco_hrformer_t_256x192"
    tiny = [o for o in SMALL if o.startswith(("data.", "task."))] + [
        "data.det_file=person_detection_results/test_coco_det_AP_H_56.json", "trainer.accelerator=cpu",
        "trainer.devices=1", "trainer.num_nodes=1", "trainer.sync_batchnorm=false", "trainer.precision=32-true",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", f"paths.output_dir={tmp_path}",
                                          f"paths.root_dir={REPO_ROOT}"])
    torch.manual_seed(0)
    ckpt = tmp_path / "official" / f"{name}.pth"
    ckpt.parent.mkdir()
    torch.save({"state_dict": build_module(cfg).state_dict()}, ckpt)
    results = tmp_path / "results.jsonl"
    run("hrformer.eval", f"ckpt_path={ckpt}", f"experiment={name}", *tiny, f"hydra.run.dir={tmp_path / 'eval'}",
        f"results_file={results}")
    (record,) = read_results(results)
    assert record["kind"] == "eval" and record["experiment"] == name and record["ckpt_path"] == str(ckpt)
    assert record["metrics"] == json.loads((tmp_path / "eval" / "metrics.json").read_text())
    text = tables.render_table("coco", tables.latest_results([results]), {})
    assert f"| {name} | — | — | {100 * record['metrics']['val/AP']:.1f} | 70.9 |" in text

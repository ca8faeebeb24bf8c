"""A plain (non-editable) ``pip install .`` works from any directory: the configs ship in the package, the console
scripts start, and a run writes under ``$HRFORMER_OUTPUT``, not under the working directory or the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.test_train import SMALL


def test_pip_install_without_e_runs_from_another_directory(tmp_path):
    source = tmp_path / "source"   # a copy: building in the checkout would leave build/ there
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(tmp_path / "home"), "WANDB_MODE": "disabled",
           "HRFORMER_OUTPUT": str(tmp_path / "runs"), "HYDRA_FULL_ERROR": "1"}
    env.pop("HRFORMER_ROOT", None)

    def run(*cmd: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    where = run(sys.executable, "-c", "import hrformer.utils.paths as p; print(p.__file__); print(p.project_root())")
    module_file, root = where.stdout.split()
    assert module_file.startswith(str(site)) and root == str(tmp_path / "home" / "hrformer")   # not the checkout
    job = run(str(site / "bin" / "hrformer-train"), "--cfg", "job", "experiment=pose_synthetic")
    assert "task_name: pose_synthetic" in job.stdout
    run(str(site / "bin" / "hrformer-train"), *SMALL, "trainer.max_steps=1", "trainer.limit_val_batches=1",
        "callbacks.prediction_pictures=null", "threads=1")
    (run_dir,) = (tmp_path / "runs" / "pose_coco_synthetic_hrformer_t" / "runs").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    (record,) = [json.loads(line) for line in (tmp_path / "runs" / "results.jsonl").read_text().splitlines()]
    assert record["run_dir"] == str(run_dir) and record["smoke"].startswith("trainer.max_steps=1")
    assert not list(elsewhere.iterdir())
    for script in ("hrformer-eval", "hrformer-convert", "hrformer-coco-eval", "hrformer-check-data"):
        run(str(site / "bin" / script), "--help")   # every console script starts

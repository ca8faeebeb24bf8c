"""Distributed runs on CPU: trainer=ddp_sim validation of pose equals a one-process evaluation of the same checkpoint,
and a two-"node" torchrun launch on localhost (two processes, gloo) trains, with one results record for both ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from hrformer.eval import evaluate
from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import read_results
from tests.conftest import REPO_ROOT
from tests.test_train import SMALL, run

KEYS = ("val/AP", "val/AP50", "val/AP75", "val/AR")


@pytest.mark.slow
def test_ddp_sim_pose_validation_equals_single_process_evaluation(tmp_path):
    """14 people over two ranks (the default sampler would pad one rank with a repeat): the gathered COCO AP of the
    DDP validation equals a one-process evaluation of the checkpoint."""
    run_dir = tmp_path / "run"
    run("hrformer.train", *SMALL, "trainer=ddp_sim", "trainer.max_epochs=1", "data.val_batch_size=3",
        f"results_file={tmp_path / 'results.jsonl'}", f"hydra.run.dir={run_dir}")
    ddp = json.loads((run_dir / "metrics.json").read_text())
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                         f"paths.output_dir={tmp_path / 'eval'}", "results_file=null"])
    single = evaluate(cfg, [])
    for key in KEYS:
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
    (record,) = read_results(tmp_path / "results.jsonl")
    assert (record["devices"], record["total_batch"]) == (2, 8)   # 4 per process x 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_on_localhost(tmp_path):
    port = free_port()
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    results = tmp_path / "results.jsonl"
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "-m", "hrformer.train", *SMALL, "trainer=multinode", "trainer.accelerator=cpu", "trainer.devices=1",
               "trainer.num_nodes=2", "trainer.sync_batchnorm=false", "precision=32-true", "trainer.max_epochs=1",
               "callbacks=none", f"results_file={results}", f"hydra.run.dir={tmp_path / f'node{node}'}"]
        log = open(tmp_path / f"node{node}.log", "w")   # files, not pipes: neither process blocks on a full pipe
        procs.append((subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for node, (proc, log) in enumerate(procs):
        proc.wait(timeout=600)
        log.close()
        assert proc.returncode == 0, (tmp_path / f"node{node}.log").read_text()[-3000:]
    metrics = json.loads((tmp_path / "node0" / "metrics.json").read_text())
    assert 0.0 <= metrics["val/AP"] <= 1.0
    assert not (tmp_path / "node1" / "metrics.json").exists()   # rank 0 writes the results
    (record,) = read_results(results)
    assert (record["devices"], record["total_batch"], record["metrics"]) == (2, 8, metrics)

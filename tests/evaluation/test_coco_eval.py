"""COCO keypoint evaluation: OKS / OKS-NMS / rescoring by hand; every AP path equals pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrformer.evaluation.coco import (
    COCO_SIGMAS,
    STAT_NAMES,
    COCOKeypointAP,
    evaluate_keypoints,
    oks_iou,
    oks_nms,
    rescore,
    to_coco_results,
)
from tests.conftest import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "scripts" / "coco_eval.py"
KEYS = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def cli_main():
    """``scripts/coco_eval.py::main`` in-process (a subprocess costs ~3 s of torch/torchmetrics imports)."""
    return load_script("coco_eval").main


@pytest.fixture(scope="module")
def ann_file(shared_dir):
    path = shared_dir / "data" / "coco_keypoints_tiny" / "annotations" / "person_keypoints_tiny.json"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def gt(ann_file):
    with open(ann_file) as f:
        return json.load(f)


def _gt_arrays(gt):
    anns = gt["annotations"]
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), 17, 3)
    ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    areas = np.array([a["area"] for a in anns], dtype=np.float32)
    return ids, kps, areas


@pytest.fixture(scope="module")
def perturbed(gt):
    """Seeded noisy predictions: 3 people dropped, one spurious person per image, random scores (float32)."""
    rng = np.random.default_rng(0)
    ids, kps, areas = _gt_arrays(gt)
    keep = np.ones(len(ids), dtype=bool)
    keep[[1, 6, 11]] = False
    ids, kps, areas = ids[keep], kps[keep], areas[keep]
    xy = kps[:, :, :2] + rng.normal(size=kps[:, :, :2].shape).astype(np.float32) \
        * (0.06 * np.sqrt(areas))[:, None, None].astype(np.float32)
    extra_ids = np.array([img["id"] for img in gt["images"]], dtype=np.int64)
    extra_xy = rng.uniform(0, 300, size=(len(extra_ids), 17, 2)).astype(np.float32)
    image_ids = np.concatenate([ids, extra_ids])
    keypoints = np.concatenate([xy, extra_xy]).astype(np.float32)
    n = len(image_ids)
    return {
        "image_ids": image_ids,
        "keypoints": keypoints,
        "keypoint_scores": rng.uniform(0, 1, size=(n, 17)).astype(np.float32),
        "scores": rng.uniform(0.05, 1, size=n).astype(np.float32),
        "areas": np.concatenate([areas, np.full(len(extra_ids), 5000, np.float32)]),
    }


def _reference_stats(ann_file, results_path) -> dict[str, float]:
    """pycocotools directly, exactly as its docs use it (independent of our wrapper)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        coco_dt = coco_gt.loadRes(str(results_path))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(KEYS, map(float, ev.stats), strict=True))


def _metric_update(metric, p, sl=slice(None), instance_ids=None):
    metric.update(torch.from_numpy(p["image_ids"][sl]), torch.from_numpy(p["keypoints"][sl]),
                  torch.from_numpy(p["keypoint_scores"][sl]), torch.from_numpy(p["scores"][sl]),
                  torch.from_numpy(p["areas"][sl]), instance_ids)


def _as_floats(out: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- hand-computed
def test_constants():
    assert len(COCO_SIGMAS) == 17 and COCO_SIGMAS[0] == 0.026 and COCO_SIGMAS[-1] == 0.089
    assert list(STAT_NAMES) == KEYS


def test_oks_iou_two_keypoint_toy_case():
    sigmas = (0.1, 0.2)  # variances (2*sigma)^2 = 0.04, 0.16
    g = np.array([[0.0, 0.0, 2], [10.0, 0.0, 2]])
    d = np.array([[[3.0, 4.0, 1.0], [10.0, 0.0, 0.1]],  # d^2 = 25 and 0
                  [[0.0, 0.0, 0.1], [10.0, 0.0, 0.1]]])  # identical, both scores low
    # scale = (100 + 100) / 2; e1 = 25 / 0.04 / 100 / 2 = 3.125, e2 = 0
    got = oks_iou(g.reshape(-1), d, 100.0, [100.0, 100.0], sigmas)
    np.testing.assert_allclose(got, [(math.exp(-3.125) + 1) / 2, 1.0], rtol=1e-12)
    # different areas: scale = (100 + 300) / 2 = 200 -> e1 = 1.5625
    np.testing.assert_allclose(oks_iou(g, d[:1], 100.0, [300.0], sigmas), [(math.exp(-1.5625) + 1) / 2])
    # vis_thr: only detection keypoints with score above it count; none left -> 0
    np.testing.assert_allclose(oks_iou(g, d, 100.0, [100.0, 100.0], sigmas, vis_thr=0.5),
                               [math.exp(-3.125), 0.0], rtol=1e-12)


def test_oks_nms_drops_near_duplicate_keeps_distinct():
    rng = np.random.default_rng(1)
    base = np.concatenate([rng.uniform(100, 200, size=(17, 2)), np.ones((17, 1))], axis=1)
    near = base.copy()
    near[:, :2] += 0.5  # half a pixel on a 100x100 person: OKS ~0.99
    far = base.copy()
    far[:, :2] += 60.0
    area = 100.0 * 100.0
    assert oks_iou(base, near[None], area, [area])[0] > 0.9
    assert oks_iou(base, far[None], area, [area])[0] < 0.1
    instances = [{"keypoints": near, "score": 0.8, "area": area},
                 {"keypoints": far, "score": 0.5, "area": area},
                 {"keypoints": base, "score": 0.9, "area": area}]
    assert oks_nms(instances, 0.9) == [2, 1]
    assert sorted(oks_nms(instances, 1.0)) == [0, 1, 2]  # OKS <= 1 always: nothing suppressed
    assert oks_nms([], 0.9) == []


def test_rescore_hand_computed():
    ks = np.array([[0.9, 0.1, 0.5, 0.2],   # above 0.2: 0.9, 0.5 (0.2 itself is not above) -> mean 0.7
                   [0.1, 0.2, 0.05, 0.0],  # none above -> mean term 0
                   [0.3, 0.3, 0.3, 0.3]])
    box = np.array([0.8, 0.7, 0.5])
    np.testing.assert_allclose(rescore(ks, box), [0.8 * 0.7, 0.0, 0.5 * 0.3], rtol=1e-12)
    np.testing.assert_allclose(rescore(torch.tensor(ks), torch.tensor(box), vis_thr=0.0),
                               [0.8 * 1.7 / 4, 0.7 * 0.35 / 3, 0.5 * 0.3], rtol=1e-12)  # 0.0 is not above 0


def test_to_coco_results_format():
    res = to_coco_results(np.array([7]), np.array([[[1.5, 2.5], [3.0, 4.0]]], np.float32),
                          np.array([[0.25, 0.75]], np.float32), np.array([0.5], np.float32))
    assert res == [{"image_id": 7, "category_id": 1, "keypoints": [1.5, 2.5, 0.25, 3.0, 4.0, 0.75],
                    "score": 0.5}]
    assert type(res[0]["image_id"]) is int and all(type(v) is float for v in res[0]["keypoints"])


# ------------------------------------------------------------------------------------------------ pycocotools
def test_ground_truth_as_predictions_gives_ap_one(ann_file, gt):
    ids, kps, _ = _gt_arrays(gt)
    visible = np.array([a["num_keypoints"] > 0 for a in gt["annotations"]])
    assert (~visible).sum() == 2  # people without labelled keypoints are ignored by COCOeval
    results = to_coco_results(ids[visible], kps[visible, :, :2], np.ones(kps[visible].shape[:2]),
                              np.ones(visible.sum()))
    stats = evaluate_keypoints(ann_file, results)
    assert list(stats) == KEYS
    assert stats == dict.fromkeys(KEYS, 1.0)


def test_perturbed_predictions_every_path_equals_pycocotools(ann_file, perturbed, tmp_path):
    p = perturbed
    results = to_coco_results(p["image_ids"], p["keypoints"], p["keypoint_scores"], p["scores"])
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(results))
    ref = _reference_stats(ann_file, res_path)
    assert 0.05 < ref["AP"] < 0.95 and all(v >= 0 for v in ref.values())  # a non-trivial case

    # library function: from the list, from the file, from a COCO object; the input list is not modified
    snapshot = json.dumps(results)
    assert evaluate_keypoints(ann_file, results) == ref
    assert json.dumps(results) == snapshot
    assert evaluate_keypoints(str(ann_file), res_path) == ref
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
    assert evaluate_keypoints(coco_gt, results) == ref

    # torchmetrics Metric without rescoring / NMS: nothing changes; it writes the same results file
    out_json = tmp_path / "metric_results.json"
    metric = COCOKeypointAP(ann_file, rescore=False, oks_nms_thr=1.0, results_file=out_json, prefix="val/")
    _metric_update(metric, p, slice(0, 5))
    _metric_update(metric, p, slice(5, None))
    out = metric.compute()
    assert list(out) == [f"val/{k}" for k in KEYS]
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in out.values())
    assert _as_floats(out) == {f"val/{k}": v for k, v in ref.items()}
    assert json.loads(out_json.read_text()) == results

    # CLI
    stats_path = tmp_path / "sub" / "stats.json"
    proc = run_cli("--ann", ann_file, "--results", res_path, "--out", stats_path)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(stats_path.read_text())
    assert list(written) == KEYS and written == ref
    assert json.loads(proc.stdout) == ref


def test_metric_rescoring_and_oks_nms_match_the_functions(ann_file, perturbed):
    p = {k: v.copy() for k, v in perturbed.items()}
    # a near-duplicate of instance 0 with a lower box score: OKS-NMS must remove it
    p["image_ids"] = np.append(p["image_ids"], p["image_ids"][0])
    p["keypoints"] = np.concatenate([p["keypoints"], p["keypoints"][:1] + 0.5])
    p["keypoint_scores"] = np.concatenate([p["keypoint_scores"], p["keypoint_scores"][:1]])
    p["scores"] = np.append(p["scores"], p["scores"][0] * 0.5)
    p["areas"] = np.append(p["areas"], p["areas"][0])

    metric = COCOKeypointAP(ann_file)  # rescore=True, vis_thr=0.2, oks_nms_thr=0.9
    _metric_update(metric, p)
    preds = metric.predictions()

    scores = rescore(p["keypoint_scores"], p["scores"], 0.2)
    keep = []
    for img in np.unique(p["image_ids"]):
        members = np.nonzero(p["image_ids"] == img)[0]
        insts = [{"keypoints": np.concatenate([p["keypoints"][j], p["keypoint_scores"][j][:, None]], 1),
                  "score": scores[j], "area": p["areas"][j]} for j in members]
        keep += [int(members[k]) for k in oks_nms(insts, 0.9)]
    keep = sorted(keep)
    assert len(p["image_ids"]) - 1 not in keep and len(keep) < len(p["image_ids"])
    expected = to_coco_results(p["image_ids"][keep], p["keypoints"][keep], p["keypoint_scores"][keep],
                               scores[keep])
    assert preds == expected
    assert _as_floats(metric.compute()) == evaluate_keypoints(ann_file, expected)


def test_metric_split_updates_and_merged_states_equal_one_update(ann_file, perturbed):
    full = COCOKeypointAP(ann_file)
    _metric_update(full, perturbed)
    rank0, rank1 = COCOKeypointAP(ann_file), COCOKeypointAP(ann_file)
    _metric_update(rank0, perturbed, slice(0, 7))
    _metric_update(rank1, perturbed, slice(7, None))
    rank1.merge_state(rank0)  # incoming state goes first: rank0's predictions, then rank1's
    assert _as_floats(rank1.compute()) == _as_floats(full.compute())

    # DistributedSampler-style padding: repeated instances are dropped when instance ids are given
    n = len(perturbed["image_ids"])
    padded = COCOKeypointAP(ann_file, rescore=False, oks_nms_thr=1.0)
    _metric_update(padded, perturbed, instance_ids=torch.arange(n))
    _metric_update(padded, perturbed, slice(0, 3), instance_ids=torch.arange(3))
    plain = COCOKeypointAP(ann_file, rescore=False, oks_nms_thr=1.0)
    _metric_update(plain, perturbed)
    assert _as_floats(padded.compute()) == _as_floats(plain.compute())


def _ddp_worker(rank: int, world: int, init_file: str, ann_file: str, perturbed: dict, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    try:
        metric = COCOKeypointAP(ann_file)
        sl = slice(0, 7) if rank == 0 else slice(7, None)  # unequal shares
        _metric_update(metric, perturbed, sl)
        queue.put((rank, _as_floats(metric.compute())))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch/torchmetrics: ~4-10 s on 2 cores
def test_metric_gathers_across_two_gloo_processes(ann_file, perturbed, tmp_path):
    full = COCOKeypointAP(ann_file)
    _metric_update(full, perturbed)
    expected = _as_floats(full.compute())
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "pg_init"), str(ann_file), perturbed, queue),
                       nprocs=2, join=True, start_method="spawn")
    got = dict(queue.get() for _ in range(2))
    assert got[0] == expected and got[1] == expected  # every rank evaluates the gathered set


# ----------------------------------------------------------------------------------------- empty / bad inputs
def test_no_predictions_give_zeros(ann_file, tmp_path):
    assert evaluate_keypoints(ann_file, []) == dict.fromkeys(KEYS, 0.0)
    out_json = tmp_path / "empty.json"
    metric = COCOKeypointAP(ann_file, results_file=out_json)
    with pytest.warns(UserWarning, match="compute"):
        out = metric.compute()  # torchmetrics warns that update was never called
    assert _as_floats(out) == dict.fromkeys(KEYS, 0.0)
    assert json.loads(out_json.read_text()) == []
    metric = COCOKeypointAP(ann_file)
    metric.update(torch.zeros(0), torch.zeros(0, 17, 2), torch.zeros(0, 17), torch.zeros(0), torch.zeros(0))
    assert _as_floats(metric.compute()) == dict.fromkeys(KEYS, 0.0)


def test_truncated_annotation_json_names_the_file(ann_file, perturbed, tmp_path, cli_main, capsys):
    bad = tmp_path / "truncated_keypoints.json"
    text = ann_file.read_text()
    bad.write_text(text[: len(text) // 2])
    results = to_coco_results(perturbed["image_ids"], perturbed["keypoints"], perturbed["keypoint_scores"],
                              perturbed["scores"])
    with pytest.raises(ValueError, match="truncated_keypoints.json"):
        evaluate_keypoints(bad, results)
    metric = COCOKeypointAP(bad)
    _metric_update(metric, perturbed)
    with pytest.raises(ValueError, match="truncated_keypoints.json"):
        metric.compute()
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(results))
    capsys.readouterr()
    assert cli_main(["--ann", str(bad), "--results", str(res_path)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_cli_bad_results_exit_code_2(ann_file, tmp_path, cli_main, capsys):
    missing = tmp_path / "no_such_results.json"
    proc = run_cli("--ann", ann_file, "--results", missing)
    assert proc.returncode == 2 and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    for name, text in [("malformed.json", '[{"image_id": 785, "keypoints": [1, 2'),
                       ("not_a_list.json", '{"image_id": 785}'),
                       ("no_keypoints.json", '[{"image_id": 785, "score": 1.0}]')]:
        bad = tmp_path / name
        bad.write_text(text)
        capsys.readouterr()
        assert cli_main(["--ann", str(ann_file), "--results", str(bad)]) == 2
        assert str(bad) in capsys.readouterr().err
    capsys.readouterr()
    assert cli_main(["--ann", str(tmp_path / "no_such_ann.json"), "--results", str(missing)]) == 2
    assert "no_such_ann.json" in capsys.readouterr().err


def test_results_for_unknown_images_are_refused(ann_file):
    res = to_coco_results([123456789], np.zeros((1, 17, 2)), np.ones((1, 17)), [1.0])
    with pytest.raises(ValueError, match="absent from the annotations"):
        evaluate_keypoints(ann_file, res)

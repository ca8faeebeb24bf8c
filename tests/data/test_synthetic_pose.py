"""The synthetic COCO person-keypoints generator writes real-format data whose conventions match COCO's."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from hrformer.data.synthetic import coco_pose
from hrformer.data.synthetic.coco_pose import ensure_synthetic_coco_pose, generate_coco_pose

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

SIZE = (320, 256)
SPLITS = ("train2017", "val2017")


def _load(root: Path, split: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(root / "annotations" / f"person_keypoints_{split}.json"))


def _kpts(ann: dict) -> np.ndarray:
    return np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "coco"
    assert generate_coco_pose(root, num_train=20, num_val=5, image_size=SIZE, seed=0) == root
    return root


@pytest.fixture(scope="module")
def anns(dataset) -> list[tuple[COCO, dict]]:
    out = []
    for split in SPLITS:
        coco = _load(dataset, split)
        out += [(coco, a) for a in coco.loadAnns(coco.getAnnIds())]
    return out


def test_layout_and_same_keys_as_real_coco(dataset, shared_dir):
    real_json = shared_dir / "data/coco_keypoints_tiny/annotations/person_keypoints_tiny.json"
    real = json.loads(real_json.read_text())
    assert (dataset / ".synthetic.json").is_file()
    for split, n in zip(SPLITS, (20, 5), strict=True):
        data = json.loads((dataset / "annotations" / f"person_keypoints_{split}.json").read_text())
        assert set(data) == set(real)
        assert data["categories"] == real["categories"]  # names, order, 1-based skeleton
        assert len(data["images"]) == n == len(list((dataset / "images" / split).glob("*.jpg")))
        assert {frozenset(im) for im in data["images"]} == {frozenset(real["images"][0])}
        assert {frozenset(a) for a in data["annotations"]} == {frozenset(real["annotations"][0])}
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        for a in data["annotations"]:
            assert a["category_id"] == 1 and a["iscrowd"] == 0
            assert all(isinstance(v, float) for v in a["bbox"]) and isinstance(a["area"], float)
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
    ids = [im["id"] for s in SPLITS for im in _load(dataset, s).dataset["images"]]
    assert len(set(ids)) == len(ids)


def test_images_decode_with_stated_size(dataset):
    for split in SPLITS:
        for im in _load(dataset, split).dataset["images"]:
            img = cv2.imread(str(dataset / "images" / split / im["file_name"]))
            assert img is not None and img.shape == (im["height"], im["width"], 3) == (SIZE[1], SIZE[0], 3)


def test_area_is_the_segmentation_area_and_has_volume(anns):
    fills = []
    for coco, a in anns:
        m = coco.annToMask(a)
        assert abs(int(m.sum()) - a["area"]) <= 0.03 * a["area"]
        ys, xs = np.nonzero(m)  # COCO bbox = tight box of the segmentation
        assert a["bbox"] == [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                             float(ys.max() - ys.min() + 1)]
        fill = a["area"] / (a["bbox"][2] * a["bbox"][3])
        # mostly visible people are bodies, not sticks (a stick figure fills ~5% of its box)
        if (_kpts(a)[:, 2] == 2).sum() >= 12:
            assert fill > 0.15
        if a["num_keypoints"] >= 10:
            fills.append(fill)
    assert len(fills) >= 20 and np.median(fills) > 0.3


def test_keypoint_conventions(anns):
    w, h = SIZE
    assert any(a["num_keypoints"] == 0 for _, a in anns)  # exercises "skip people without keypoints"
    # as in COCO, small people (segment area < 32^2) carry no keypoints; most of the others are well labelled
    small = [a for _, a in anns if a["area"] < 32**2]
    large = [a for _, a in anns if a["area"] >= 32**2]
    assert small and all(a["num_keypoints"] == 0 and not any(a["keypoints"]) for a in small)
    assert sum(a["num_keypoints"] >= 10 for a in large) > 0.6 * len(large)
    vis = np.concatenate([_kpts(a)[:, 2] for _, a in anns])
    assert set(np.unique(vis)) <= {0, 1, 2} and (vis == 1).any() and (vis == 2).any()
    for coco, a in anns:
        k = _kpts(a)
        assert a["num_keypoints"] == int((k[:, 2] > 0).sum())
        assert (k[k[:, 2] == 0] == 0).all()  # unlabelled: (0, 0, 0)
        lab = k[k[:, 2] > 0]
        assert ((lab[:, :2] >= -0.5) & (lab[:, :2] < np.array([w, h]) - 0.5)).all()
        x, y, bw, bh = a["bbox"]
        m = coco.annToMask(a)
        for kx, ky, _ in k[k[:, 2] == 2]:  # visible keypoints: inside the box and on the visible silhouette
            ix, iy = int(np.floor(kx + 0.5)), int(np.floor(ky + 0.5))
            assert x <= ix < x + bw and y <= iy < y + bh
            assert m[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2].any()


def test_left_right_follows_the_facing_direction():
    for i in range(20):
        for yaw, sign in ((0.0, 1), (30.0, 1), (-30.0, 1), (180.0, -1), (150.0, -1)):
            p = coco_pose._build_person(np.random.default_rng(i), view=(yaw, 0.0, 0.0))
            k = p.kpts
            assert sign * (k[5, 0] - k[6, 0]) > 0  # shoulders: left on the image right when facing the camera
            assert sign * (k[11, 0] - k[12, 0]) > 0  # hips
            if sign > 0:
                assert p.self_vis[0] > 0
            else:
                assert p.self_vis[0] < 2  # face turned away: the nose is hidden or unlabelled


def test_left_right_in_the_dataset(anns):
    k = np.stack([_kpts(a) for _, a in anns])
    face = (k[:, 1, 2] == 2) & (k[:, 2, 2] == 2)
    assert face.sum() >= 5 and (k[face, 1, 0] > k[face, 2, 0]).mean() >= 0.9
    front = face & (k[:, 5, 2] > 0) & (k[:, 6, 2] > 0)
    assert (k[front, 5, 0] > k[front, 6, 0]).mean() >= 0.9
    # seen from the back: nose and eyes unlabelled but the ears labelled (a head cut off by the image border has
    # no labelled ears either, and may face the camera)
    back = (k[:, 0:3, 2] == 0).all(1) & (k[:, 3:5, 2] > 0).all(1) & (k[:, 5, 2] > 0) & (k[:, 6, 2] > 0)
    assert back.sum() >= 3 and (k[back, 5, 0] < k[back, 6, 0]).mean() >= 0.9


def test_deterministic_by_seed(tmp_path):
    kw = dict(num_train=4, num_val=2, image_size=(256, 192))
    a, b, c = (generate_coco_pose(tmp_path / n, seed=s, **kw) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 4 + 2 + 2 + 1
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ann = Path("annotations/person_keypoints_train2017.json")
    assert (a / ann).read_bytes() != (c / ann).read_bytes()


def test_ensure_reuses_and_regenerates(tmp_path):
    root = tmp_path / "coco"
    kw = dict(num_train=3, num_val=2, image_size=(256, 192), seed=0)
    ensure_synthetic_coco_pose(root, **kw)
    marker, train_json = root / ".synthetic.json", root / "annotations/person_keypoints_train2017.json"
    stamp = (marker.stat().st_mtime_ns, train_json.stat().st_mtime_ns)
    ensure_synthetic_coco_pose(root, **kw)
    assert (marker.stat().st_mtime_ns, train_json.stat().st_mtime_ns) == stamp

    (root / "unrelated.txt").write_text("keep me")
    ensure_synthetic_coco_pose(root, **{**kw, "num_train": 2, "seed": 1})
    assert json.loads(marker.read_text())["seed"] == 1 and json.loads(marker.read_text())["num_train"] == 2
    names = sorted(p.name for p in (root / "images/train2017").iterdir())
    assert names == ["000000000001.jpg", "000000000002.jpg"]
    assert (root / "unrelated.txt").read_text() == "keep me"

    marker.unlink()  # an interrupted generation leaves no marker: detected and redone
    (root / ".synthetic.partial.json").write_text(json.dumps(coco_pose._params(**{**kw, "num_train": 2})))
    ensure_synthetic_coco_pose(root, **kw)
    assert json.loads(marker.read_text())["seed"] == 0 and not (root / ".synthetic.partial.json").exists()
    assert len(_load(root, "train2017").dataset["images"]) == 3


def test_refuses_to_overwrite_foreign_annotations(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/person_keypoints_train2017.json").write_text("{}")
    with pytest.raises(FileExistsError):
        ensure_synthetic_coco_pose(tmp_path, num_train=1, num_val=1)


def test_cli(tmp_path, capsys):
    coco_pose.main(["--root", str(tmp_path / "c"), "--num-train", "2", "--num-val", "1",
                    "--image-size", "160", "128"])
    assert "synthetic COCO keypoints" in capsys.readouterr().out
    im = _load(tmp_path / "c", "val2017").dataset["images"][0]
    assert (im["width"], im["height"]) == (160, 128)

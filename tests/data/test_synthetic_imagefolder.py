"""The synthetic shapes/textures ImageFolder generator: layout, determinism, regeneration rules, class cues."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hrformer.data.imagefolder import ImageFolderDataset, find_classes
from hrformer.data.synthetic.imagefolder_shapes import (
    CLASSES,
    SHAPES,
    TEXTURES,
    ensure_synthetic_imagefolder,
    generate_imagefolder,
    render,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "shapes"
    assert generate_imagefolder(root, num_train=3, num_val=2, image_size=48, seed=0) == root
    return root


def test_layout_is_an_imagefolder_with_every_class(dataset):
    assert CLASSES == tuple(sorted(SHAPES + TEXTURES)) and len(CLASSES) == 8
    for split, n in (("train", 3), ("val", 2)):
        assert find_classes(dataset / split) == list(CLASSES)
        for name in CLASSES:
            files = sorted((dataset / split / name).iterdir())
            assert [f.name for f in files] == [f"{name}_{i:05d}.jpg" for i in range(n)]
            assert all(cv2.imread(str(f)).shape == (48, 48, 3) for f in files)
    marker = json.loads((dataset / ".synthetic.json").read_text())
    assert marker["classes"] == list(CLASSES) and marker["num_train"] == 3 and marker["seed"] == 0
    assert not (dataset / ".synthetic.partial.json").exists()
    loaded = ImageFolderDataset(dataset / "val")
    assert len(loaded) == 16 and loaded.targets == [i for i in range(8) for _ in range(2)]


def test_generation_is_deterministic_by_seed(dataset, tmp_path):
    again = generate_imagefolder(tmp_path / "again", num_train=3, num_val=2, image_size=48, seed=0)
    other = generate_imagefolder(tmp_path / "other", num_train=3, num_val=2, image_size=48, seed=1)
    for f in sorted((dataset / "train").rglob("*.jpg")):
        rel = f.relative_to(dataset)
        assert (again / rel).read_bytes() == f.read_bytes()
        assert (other / rel).read_bytes() != f.read_bytes()


def test_ensure_reuses_a_complete_set_and_regenerates_on_change(tmp_path):
    root = tmp_path / "s"
    ensure_synthetic_imagefolder(root, num_train=2, num_val=1, image_size=32)
    probe = root / "train" / "circle" / "circle_00000.jpg"
    probe.write_bytes(b"touched")  # a reused set keeps this file as it is
    ensure_synthetic_imagefolder(root, num_train=2, num_val=1, image_size=32)
    assert probe.read_bytes() == b"touched"
    ensure_synthetic_imagefolder(root, num_train=1, num_val=1, image_size=32)  # other parameters: regenerated
    assert probe.read_bytes() != b"touched" and not (root / "train" / "circle" / "circle_00001.jpg").exists()
    (root / ".synthetic.partial.json").write_text("{}")  # an interrupted generation is redone
    ensure_synthetic_imagefolder(root, num_train=1, num_val=1, image_size=32)
    assert not (root / ".synthetic.partial.json").exists()


def test_refuses_to_overwrite_a_foreign_dataset(tmp_path):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_imagefolder(tmp_path, num_train=1, num_val=1)
    assert (tmp_path / "train" / "cats").is_dir()


def test_textures_are_periodic_and_shapes_are_single_blobs():
    """The class is in the figure: textures repeat across the image, a shape is one region on a smooth ground."""
    def edge_fraction(image: np.ndarray) -> float:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return float((cv2.Canny(gray, 60, 150) > 0).mean())

    texture = [edge_fraction(render(np.random.default_rng([7, i]), name, 64)) for i, name in
               enumerate(TEXTURES * 5)]
    shape = [edge_fraction(render(np.random.default_rng([7, i]), name, 64)) for i, name in enumerate(SHAPES * 4)]
    assert np.median(texture) > 2 * np.median(shape)
    images = [render(np.random.default_rng([3, i]), "circle", 64) for i in range(20)]
    colours = np.array([im.reshape(-1, 3).mean(0) for im in images])
    assert colours.std(0).min() > 20  # colours vary: they do not tell the class
    with pytest.raises(ValueError, match="unknown class"):
        render(np.random.default_rng(0), "square")

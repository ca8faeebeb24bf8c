"""Every experiment composes; the paper-table rows hold their tables' recipes; one row per task/backbone family trains
one step on tiny inputs through the real entry point; the results store records each run."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hrformer.train import train
from hrformer.utils.paths import CONFIG_DIR
from hrformer.utils.run import config_hash, read_results
from tests.conftest import REPO_ROOT, SHARED

CONF = CONFIG_DIR
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TABLES = {"imagenet", "coco", "cityscapes", "pascal-context", "coco-stuff", "ade20k"}
# the rows issue 6 names: HRFormer T/S/B ImageNet; COCO HRFormer T/S/B 256x192, S/B 384x288, HRNet W32/W48 both sizes;
# HRFormer-S/B (+ window 15 / 13 on ADE20K) OCR on the four segmentation sets; HRNetV2-W48 Cityscapes
ROWS = (
    [f"cls_imagenet_hrformer_{v}" for v in "tsb"]
    + [f"pose_coco_hrformer_{v}_256x192" for v in "tsb"] + [f"pose_coco_hrformer_{v}_384x288" for v in "sb"]
    + [f"pose_coco_hrnet_{w}_{s}" for w in ("w32", "w48") for s in ("256x192", "384x288")]
    + [f"seg_{d}_hrformer_{v}_ocr" for d in ("cityscapes", "pascal_context", "coco_stuff", "ade20k") for v in "sb"]
    + [f"seg_{d}_hrformer_b_w15_ocr" for d in ("cityscapes", "pascal_context", "coco_stuff")]
    + ["seg_ade20k_hrformer_b_w13_ocr", "seg_cityscapes_hrnetv2_w48"]
)
# segmentation: iterations and total batch per dataset (HRFormer README)
SEG_SCHEDULE = {"cityscapes": (80000, 8), "pascal_context": (60000, 16), "coco_stuff": (60000, 16),
                "ade20k": (150000, 8)}


def compose_experiment(name: str, *overrides: str, output_dir="/tmp/unused"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", f"paths.output_dir={output_dir}",
                                           f"paths.root_dir={REPO_ROOT}", *overrides])


@pytest.fixture(scope="module")
def composed():
    return {name: compose_experiment(name) for name in EXPERIMENTS}


def test_every_paper_row_has_an_experiment():
    files = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert set(ROWS) <= files, sorted(set(ROWS) - files)


def test_every_experiment_composes_with_its_own_name_and_a_paper_table(composed):
    for name, cfg in composed.items():
        assert cfg.task_name == name
        assert cfg.optimized_metric == cfg.task.key_metric
        if name in ROWS:
            assert cfg.paper.table in TABLES, name
            assert cfg.task.key_metric in cfg.paper.metrics, name
            assert all(0 < v < 1 for v in cfg.paper.metrics.values()), name   # fractions, as our metrics


def test_pose_rows_follow_the_official_recipes(composed):
    for name in (n for n in ROWS if n.startswith("pose_") and n in composed):
        cfg = composed[name]
        w, h = cfg.task.codec.input_size
        assert f"{h}x{w}" in name and list(cfg.task.codec.heatmap_size) == [w // 4, h // 4]
        assert cfg.task.codec.sigma == (2 if h == 256 else 3)
        assert cfg.data.bbox_source == "det" and cfg.task.task.flip_test and cfg.trainer.max_epochs == 210
        assert cfg.backbone.multiscale_output is False and cfg.trainer.sync_batchnorm
        if "hrnet" in name:   # Adam without weight decay, no warm-up, 4 GPUs x 32 (W48: 24)
            assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.module.weight_decay == 0
            assert cfg.optimizer.lr == pytest.approx(1e-3) and cfg.scheduler.warmup_steps == 0
            assert cfg.data.batch_size * cfg.trainer.devices == (96 if "w48" in name else 128)
            assert cfg.trainer.precision == "32-true"
        else:                 # AdamW 5e-4, wd 0.01, fp16, 8 GPUs x 32 (B 384x288: 8), no RPE (official pose code)
            assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == pytest.approx(5e-4)
            assert cfg.module.weight_decay == 0.01 and cfg.trainer.precision == "16-mixed"
            assert cfg.data.batch_size * cfg.trainer.devices == (64 if name.endswith("b_384x288") else 256)
            assert cfg.backbone.rpe is False and cfg.backbone.fuse_upsample == "bilinear"


def test_segmentation_rows_follow_the_official_recipes(composed):
    for name in (n for n in ROWS if n.startswith("seg_") and "hrformer" in n):
        cfg = composed[name]
        dataset = name[4:name.index("_hrformer")]
        iters, total = SEG_SCHEDULE[dataset]
        assert (cfg.trainer.max_steps, cfg.data.batch_size * cfg.trainer.devices) == (iters, total)
        assert cfg.task.head._target_.endswith("OCRHead") and cfg.task.loss.ohem and cfg.task.loss.ohem_thresh == 0.9
        window = 15 if "_w15_" in name else 13 if "_w13_" in name else 7
        assert cfg.backbone.window_size == window and cfg.backbone.rpe is True
        assert cfg.optimizer.lr == pytest.approx(1e-4) and cfg.scheduler.warmup_steps == 1500
        assert (cfg.task.loss.class_weights is not None) == (dataset == "cityscapes")
    hrnet = composed["seg_cityscapes_hrnetv2_w48"]
    assert hrnet.optimizer._target_ == "torch.optim.SGD" and hrnet.module.weight_decay == 5e-4
    assert hrnet.data.batch_size * hrnet.trainer.devices == 12


def test_unknown_experiment_key_is_named():
    with pytest.raises(Exception, match="nonexistent_key"):
        compose_experiment("pose_coco_hrformer_s_256x192", "trainer.nonexistent_key=1")


TINY_POSE = SHARED / "data" / "coco_keypoints_tiny"
TINY_CLS = SHARED / "data" / "imagefolder_tiny"
CPU_ONE_STEP = [  # on one CPU process, one optimizer step and one validation batch, no pictures/loggers
    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=1", "trainer.strategy=auto",
    "trainer.sync_batchnorm=false", "precision=32-true", "trainer.max_epochs=1", "trainer.max_steps=1",
    "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
    "trainer.val_check_interval=null", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "logger=none", "callbacks=none", "scheduler.warmup_steps=1", "module.init_checkpoint=null", "threads=1",
]
FAMILIES = {  # one row per task/backbone family, shrunk
    "pose_coco_hrformer_t_256x192": [
        f"data.root={TINY_POSE}", "data.train_ann=annotations/person_keypoints_tiny.json",
        "data.val_ann=annotations/person_keypoints_tiny.json", "data.train_images=images/val2017",
        "data.det_file=person_detection_results/test_coco_det_AP_H_56.json", "data.num_workers=0",
        "data.batch_size=2", "data.val_batch_size=64", "task.codec.input_size=[32,48]",
        "task.codec.heatmap_size=[8,12]", "task.codec.sigma=1.0"],
    "pose_coco_hrnet_w32_256x192": None,          # same overrides as the HRFormer pose row
    "seg_cityscapes_hrformer_s_ocr": "seg",
    "seg_cityscapes_hrnetv2_w48": "seg",
    "cls_imagenet_hrformer_t": "cls",
    "cls_imagenet_uniformer_s": "cls",
}


def family_overrides(name: str, tmp_path) -> list[str]:
    spec = FAMILIES[name]
    if spec is None:
        spec = FAMILIES["pose_coco_hrformer_t_256x192"]
    if spec == "seg":
        spec = ["data=cityscapes_synthetic", f"data.root={tmp_path.parent / 'seg_syn'}", "data.synthetic.num_train=2",
                "data.synthetic.num_val=1", "data.synthetic.image_size=[64,32]", "data.crop_size=[32,32]",
                "data.batch_size=2", "data.val_batch_size=1", "data.num_workers=0", "task.loss.ohem_min_kept=10"]
    if spec == "cls":   # the 5 real photos (train = val) at 64 px
        spec = [f"data.root={TINY_CLS}", "data.train_dir=.", "data.val_dir=.", "data.num_classes=4",
                "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=5", "data.train_size=64",
                "data.val_size=64", "data.pin_memory=false"]
    return [*spec, *CPU_ONE_STEP, f"results_file={tmp_path / 'results.jsonl'}"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_one_training_step_per_family_is_recorded(name, tmp_path):
    cfg = compose_experiment(name, *family_overrides(name, tmp_path), output_dir=tmp_path)
    metrics = train(cfg)
    assert cfg.task.key_metric in metrics and metrics[cfg.task.key_metric] is not None
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    (record,) = read_results(tmp_path / "results.jsonl")
    assert record["experiment"] == name and record["kind"] == "train" and record["metrics"] == metrics
    assert record["key_metric"] == cfg.task.key_metric
    assert (record["devices"], record["total_batch"]) == (1, 2)
    assert record["config_hash"] == config_hash(cfg) and record["run_dir"] == str(tmp_path)
    assert record["git_commit"] is None or len(record["git_commit"].split("+")[0]) == 40


def test_config_hash_ignores_where_a_run_writes_but_not_what_it_trains(tmp_path):
    base = compose_experiment("pose_coco_hrformer_s_256x192", output_dir=tmp_path / "a")
    moved = compose_experiment("pose_coco_hrformer_s_256x192", f"results_file={tmp_path}/r.jsonl",
                               output_dir=tmp_path / "b")
    changed = compose_experiment("pose_coco_hrformer_s_256x192", "optimizer.lr=1e-3", output_dir=tmp_path / "a")
    assert config_hash(base) == config_hash(moved) != config_hash(changed)
    assert OmegaConf.select(base, "paper.table") == "coco"


@pytest.mark.parametrize("preset", ["bf16-mixed", "16-mixed", "32-true"])
def test_precision_presets_override_the_trainer_and_the_experiment(preset):
    cfg = compose_experiment("pose_coco_hrformer_s_256x192", f"precision={preset}")   # the experiment says 16-mixed
    assert cfg.trainer.precision == preset


def test_scale_trainers():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ddp = compose("train", overrides=["trainer=ddp", "trainer.devices=4"])
        multi = compose("train", overrides=["trainer=multinode", "trainer.num_nodes=3"])
        sim = compose("train", overrides=["trainer=ddp_sim"])
        with pytest.raises(Exception, match="precision"):
            compose("train", overrides=["precision=fp8-magic"])
    assert (ddp.trainer.strategy, ddp.trainer.sync_batchnorm, ddp.trainer.devices, ddp.trainer.num_nodes) == (
        "ddp", True, 4, 1)
    assert (multi.trainer.strategy, multi.trainer.sync_batchnorm, multi.trainer.num_nodes) == ("ddp", True, 3)
    assert (sim.trainer.accelerator, sim.trainer.devices) == ("cpu", 2)


def test_optuna_search_config():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra [sweep] not installed")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "maximize" and "optimizer.lr" in cfg.hydra.sweeper.params


# experiment: (drop path, top-1 of the HRFormer paper's table, lr at a total batch of 512, warm-up epochs of 300);
# the UniFormer rows are not in the HRFormer tables (no paper: block; their published numbers are in the headers)
IMAGENET_ROWS = {
    "cls_imagenet_hrformer_t": (0.0, 0.786, 5e-4, 20), "cls_imagenet_hrformer_s": (0.0, 0.812, 5e-4, 20),
    "cls_imagenet_hrformer_b": (0.2, 0.828, 5e-4, 20), "cls_imagenet_uniformer_s": (0.1, None, 5e-4, 5),
    "cls_imagenet_uniformer_s_plus": (0.1, None, 5e-4, 5), "cls_imagenet_uniformer_b": (0.3, None, 4e-4, 5),
}


@pytest.mark.parametrize("name", sorted(IMAGENET_ROWS))
def test_imagenet_rows_follow_the_official_recipes(name, composed):
    """The shared recipe experiment/cls_imagenet (AdamW, lr x total batch / 512, weight decay 0.05 except 1-D
    parameters, 300 cosine epochs, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, clip 5, AMP) with the row's drop path,
    warm-up and 128 images per GPU x 8 = 1024; UniFormer with its own head and EMA."""
    drop_path, top1, lr, warmup_epochs = IMAGENET_ROWS[name]
    cfg = composed[name]
    assert cfg.task.name == "cls" and cfg.data._target_.endswith("ImageFolderDataModule")
    assert cfg.data.num_classes == 1000 and (cfg.data.train_size, cfg.data.val_size) == (224, 224)
    assert cfg.data.batch_size * cfg.trainer.devices == 1024 and cfg.module.lr_reference_batch == 512
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == pytest.approx(lr)
    assert cfg.module.weight_decay == 0.05 and cfg.module.no_decay_norm_and_bias
    assert cfg.trainer.max_epochs == 300 and cfg.trainer.gradient_clip_val == 5.0
    assert cfg.trainer.precision == "16-mixed" and cfg.trainer.strategy == "ddp"
    assert cfg.scheduler.warmup_fraction == pytest.approx(warmup_epochs / 300, abs=1e-4)
    assert cfg.task.task.label_smoothing == 0.1
    assert (cfg.task.task.mixup.mixup_alpha, cfg.task.task.mixup.cutmix_alpha) == (0.8, 1.0)
    assert cfg.backbone.drop_path_rate == drop_path
    assert (OmegaConf.select(cfg, "paper.metrics") or {}).get("val/top1") == (pytest.approx(top1) if top1 else None)
    uniformer = "uniformer" in name
    assert cfg.backbone.multiscale_output is not uniformer and ("ema" in cfg.callbacks) is uniformer

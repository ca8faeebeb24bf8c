"""Lightning callbacks of the project (metrics.json is written by ``hrformer.train`` itself)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

__all__ = ["PredictionPictures"]


class PredictionPictures(L.Callback):
    """Pictures of the predictions on the first validation batch, as PNGs in the run directory and on W&B.

    At the end of every ``every_n_val``-th validation (rank zero only; never during the sanity check) the
    module's ``last_val_outputs`` (``[{"batch", "outputs"}]``) go through ``pl_module.task.pictures(batch,
    outputs, max_images=...)`` -> ``[(name, RGB uint8 image)]`` (tasks without ``pictures`` are skipped).  The
    images are written to ``<trainer.default_root_dir>/<dirname>/epoch{E:03d}_{name}.png`` and logged to every
    ``WandbLogger`` under ``val/predictions`` at the current global step.  A task that also has
    ``wandb_images(batch, outputs, max_images=...)`` -> ``[(caption, RGB uint8 image, wandb.Image kwargs)]``
    (e.g. segmentation: the image with interactive ``masks``) gives W&B those instead of the PNG pictures.
    Tasks that have ``prediction_table(batch, outputs, max_images=...)`` -> ``(columns, rows)``
    (classification: image, true and predicted label, ...) get a W&B table ``val/prediction_table`` too; RGB
    uint8 arrays in its cells become ``wandb.Image``.

    Args:
        every_n_val: draw at every n-th validation run (1: every one).
        max_images: at most this many pictures per validation.
        dirname: folder under the trainer's ``default_root_dir`` (the run directory in the Hydra config).
    """

    def __init__(self, every_n_val: int = 1, max_images: int = 8, dirname: str = "pictures"):
        super().__init__()
        if every_n_val < 1:
            raise ValueError(f"every_n_val must be >= 1, got {every_n_val}")
        self.every_n_val, self.max_images, self.dirname = int(every_n_val), int(max_images), dirname
        self.num_validations = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.num_validations += 1
        if not trainer.is_global_zero or (self.num_validations - 1) % self.every_n_val:
            return
        pictures_fn = getattr(getattr(pl_module, "task", None), "pictures", None)
        entries = getattr(pl_module, "last_val_outputs", None) or []
        if pictures_fn is None or not entries or self.max_images <= 0:
            return
        pictures: list[tuple[str, np.ndarray]] = []
        for entry in entries:
            pictures += pictures_fn(entry["batch"], entry["outputs"], max_images=self.max_images - len(pictures))
            if len(pictures) >= self.max_images:
                break
        if not pictures:
            return
        root = Path(trainer.default_root_dir or trainer.log_dir or ".")
        out_dir = root / self.dirname
        out_dir.mkdir(parents=True, exist_ok=True)
        epoch = trainer.current_epoch
        for name, image in pictures:
            path = out_dir / f"epoch{epoch:03d}_{name}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
        log.info("wrote %d prediction pictures of epoch %d to %s", len(pictures), epoch, out_dir)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        media_fn = getattr(pl_module.task, "wandb_images", None)
        if media_fn is None:
            media = [(name, image, {}) for name, image in pictures]
        else:
            media = []
            for entry in entries:
                media += media_fn(entry["batch"], entry["outputs"], max_images=self.max_images - len(media))
                if len(media) >= self.max_images:
                    break
        extra = {key: [kwargs[key] for _, _, kwargs in media] for key in (media[0][2] if media else {})}
        for logger in wandb_loggers:
            logger.log_image(key="val/predictions", images=[image for _, image, _ in media],
                             caption=[f"epoch {epoch} {name}" for name, _, _ in media], step=trainer.global_step,
                             **extra)
        table_fn = getattr(pl_module.task, "prediction_table", None)
        if table_fn is not None:
            columns, rows = self._table(table_fn, entries)
            for logger in wandb_loggers:
                logger.log_table(key="val/prediction_table", columns=columns, data=rows, step=trainer.global_step)

    def _table(self, table_fn, entries: list[dict]) -> tuple[list[str], list[list]]:
        import wandb

        columns, rows = [], []
        for entry in entries:
            columns, more = table_fn(entry["batch"], entry["outputs"], max_images=self.max_images - len(rows))
            rows += more
            if len(rows) >= self.max_images:
                break
        as_cell = lambda v: wandb.Image(v) if isinstance(v, np.ndarray) and v.ndim == 3 else v  # noqa: E731
        return columns, [[as_cell(v) for v in row] for row in rows]

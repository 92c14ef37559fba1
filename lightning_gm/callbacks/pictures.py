"""Sample and reconstruction pictures, saved in the run folder and logged to W&B as images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger

from lightning_gm.images import as_images, make_grid, save_png, save_scatter

__all__ = ["SamplePictures"]


class SamplePictures(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, and after the last one, draw ``num_samples`` samples (and
    reconstructions of the first validation examples when the model has ``reconstruct``) and write them to
    ``<run>/samples/`` as PNG, and to W&B. The last epoch's pictures are always written, so a run shorter
    than ``every_n_epochs`` (or stopped by ``max_time``) still shows what it learned.

    Args:
        every_n_epochs: how often (in validation epochs).
        num_samples: number of samples in the grid (or points in a 2-D scatter plot).
        num_reconstructions: number of validation examples reconstructed (0 = none).
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 64, num_reconstructions: int = 32) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions
        self.last_paths: list[Path] = []
        self._last_epoch: Optional[int] = None  # the latest validation epoch, and whether it was drawn
        self._drawn: Optional[int] = None

    def _folder(self, trainer: pl.Trainer) -> Path:
        return Path(trainer.default_root_dir) / "samples"

    def _log(self, trainer: pl.Trainer, key: str, path: Path) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._last_epoch = trainer.current_epoch
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module, trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_epoch is not None and self._drawn != self._last_epoch:
            self._draw(trainer, pl_module, self._last_epoch)

    def _draw(self, trainer: pl.Trainer, pl_module: Any, epoch: int) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "sample"):
            return
        self._drawn = epoch
        self.write(trainer, pl_module, f"epoch={epoch:03d}")

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: Any, tag: str) -> list[Path]:
        was_training = pl_module.training
        pl_module.eval()
        try:
            folder = self._folder(trainer)
            paths = []
            samples = pl_module.sample(self.num_samples).float().cpu()
            images = as_images(samples, pl_module.data_shape)
            if images is not None:
                paths.append(("samples", save_png(make_grid(images), folder / f"samples_{tag}.png")))
            elif samples.shape[-1] == 2:
                ref = self._reference(trainer, self.num_samples)
                paths.append(("samples", save_scatter(samples, folder / f"samples_{tag}.png", reference=ref)))
            recon = self._reconstructions(trainer, pl_module)
            if recon is not None:
                paths.append(("reconstructions", save_png(make_grid(recon, nrow=8), folder / f"reconstructions_{tag}.png")))
            for key, path in paths:
                self._log(trainer, key, path)
            self.last_paths = [p for _, p in paths]
            return self.last_paths
        finally:
            pl_module.train(was_training)

    def _reference(self, trainer: pl.Trainer, n: int) -> Optional[torch.Tensor]:
        dm = getattr(trainer, "datamodule", None)
        splits = getattr(dm, "splits", {})
        return splits["val"][0][:n] if "val" in splits else None

    def _reconstructions(self, trainer: pl.Trainer, pl_module: Any) -> Optional[torch.Tensor]:
        if not self.num_reconstructions or not hasattr(pl_module, "reconstruct"):
            return None
        x = self._reference(trainer, self.num_reconstructions)
        if x is None:
            return None
        rec = pl_module.reconstruct(x.to(pl_module.device)).float().cpu()
        orig, rec = as_images(x, pl_module.data_shape), as_images(rec, pl_module.data_shape)
        if orig is None or rec is None:
            return None
        # rows of 8: originals above their reconstructions
        pairs = [t for i in range(0, len(orig), 8) for t in (orig[i : i + 8], rec[i : i + 8])]
        return torch.cat(pairs)

r"""Pictures of a latent-variable model's latent space: interpolations and, for 2-D latents, the manifold.

*Interpolations*: for pairs of validation examples :math:`(x_a, x_b)` with posterior means
:math:`(z_a, z_b)`, decode :math:`z_t = (1-t) z_a + t z_b` for ``t`` evenly spaced in ``[0, 1]``, one row
per pair. *Manifold* (Kingma & Welling 2014, figure 4): for a 2-D latent space, decode the grid
:math:`z_{ij} = (\Phi^{-1}(u_i), \Phi^{-1}(u_j))` with :math:`u` evenly spaced in ``(0, 1)``, so the
grid covers the standard-normal prior by equal probability mass.

The model needs ``encode_mean(x) -> (B, L)``, ``decode_mean(z) -> (B, D)`` and ``top_latent_dim``
(every model of :mod:`lightning_gm.models.vae` has them). Pictures go to ``<run>/samples/`` and W&B.

References: Kingma & Welling (2014), Auto-Encoding Variational Bayes; White (2016), Sampling Generative Networks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_gm.images import as_images, make_grid, save_png

__all__ = ["LatentPictures", "interpolate", "manifold_grid"]


def interpolate(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Linear paths between rows of ``z_a`` and ``z_b`` (``(P, L)``): ``(P, steps, L)``, endpoints included."""
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device).view(1, -1, 1)
    return (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)


def manifold_grid(size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The ``size x size`` grid of 2-D latents at standard-normal quantiles, row-major, ``(size**2, 2)``;
    rows go from high to low :math:`z_2` (so the picture has :math:`z_2` increasing upwards)."""
    u = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    q = torch.distributions.Normal(0.0, 1.0).icdf(u)
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=1).to(dtype)


class LatentPictures(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, write latent interpolations (and the manifold picture
    when the latent space is 2-D) as PNG and log them to W&B (keys ``interpolations``, ``manifold``).

    Args:
        every_n_epochs: how often (in validation epochs).
        num_pairs: pairs of validation examples interpolated (one row each).
        steps: images per interpolation row, endpoints included.
        manifold_size: points per axis of the 2-D manifold grid.
    """

    def __init__(self, every_n_epochs: int = 1, num_pairs: int = 8, steps: int = 10, manifold_size: int = 20) -> None:
        self.every_n_epochs, self.num_pairs, self.steps, self.manifold_size = every_n_epochs, num_pairs, steps, manifold_size
        self.last_paths: list[Path] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not trainer.is_global_zero or not hasattr(pl_module, "decode_mean"):
            return
        self.write(trainer, pl_module, f"epoch={trainer.current_epoch:03d}")

    def _validation(self, trainer: pl.Trainer, n: int) -> Optional[Tensor]:
        splits = getattr(getattr(trainer, "datamodule", None), "splits", {})
        return splits["val"][0][:n] if "val" in splits else None

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: Any, tag: str) -> list[Path]:
        """Draw, save and log the pictures; returns their paths."""
        folder = Path(trainer.default_root_dir) / "samples"
        was_training = pl_module.training
        pl_module.eval()
        paths: list[tuple[str, Path]] = []
        try:
            x = self._validation(trainer, 2 * self.num_pairs)
            if x is not None and len(x) >= 2:
                z = pl_module.encode_mean(x.to(pl_module.device))
                half = len(z) // 2
                path = interpolate(z[:half], z[half : 2 * half], self.steps).reshape(-1, z.shape[-1])
                images = as_images(pl_module.decode_mean(path).float().cpu(), pl_module.data_shape)
                if images is not None:
                    paths.append(("interpolations", save_png(make_grid(images, nrow=self.steps),
                                                             folder / f"interpolations_{tag}.png")))
            if int(pl_module.top_latent_dim) == 2:
                grid = manifold_grid(self.manifold_size).to(pl_module.device, pl_module.dtype)
                images = as_images(pl_module.decode_mean(grid).float().cpu(), pl_module.data_shape)
                if images is not None:
                    paths.append(("manifold", save_png(make_grid(images, nrow=self.manifold_size, padding=0),
                                                       folder / f"manifold_{tag}.png")))
        finally:
            pl_module.train(was_training)
        for key, p in paths:
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[str(p)], step=trainer.global_step)
        self.last_paths = [p for _, p in paths]
        return self.last_paths

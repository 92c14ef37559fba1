"""Pictures of Boltzmann machines: samples plus filter grids and fantasy chains, as PNG and on W&B.

:class:`RBMPictures` is :class:`~lightning_gm.callbacks.pictures.SamplePictures` plus whatever the model
returns from ``pictures()`` (``name -> (N, D)`` tensors in ``[0, 1]``): for the RBM family the
filters (columns of ``W`` as images) and the persistent (fantasy) chains.

References: Hinton (2010), A practical guide to training RBMs, section 15 (displaying what is happening).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_gm.callbacks.pictures import SamplePictures
from lightning_gm.images import as_images, make_grid, save_png

__all__ = ["RBMPictures"]


class RBMPictures(SamplePictures):
    """Samples (and reconstructions) as :class:`SamplePictures`, plus the model's ``pictures()``:
    ``filters_<tag>.png`` and ``fantasy_<tag>.png`` in ``<run>/samples/`` and on W&B.

    Args:
        every_n_epochs: how often (in validation epochs).
        num_samples: number of samples in the grid (and of fantasy chains shown).
        num_reconstructions: validation examples reconstructed (0 = none).
        num_filters: hidden units whose filters are shown.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 64, num_reconstructions: int = 32,
                 num_filters: int = 100) -> None:
        super().__init__(every_n_epochs, num_samples, num_reconstructions)
        self.num_filters = num_filters

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: Any, tag: str) -> list[Path]:
        paths = list(super().write(trainer, pl_module, tag))
        if not hasattr(pl_module, "pictures"):
            return paths
        for name, flat in pl_module.pictures(self.num_samples).items():
            limit = self.num_filters if name == "filters" else self.num_samples
            images = as_images(flat[:limit], (flat.shape[-1],))
            if images is None:
                continue
            path = save_png(make_grid(images, nrow=10 if name == "filters" else None), self._folder(trainer) / f"{name}_{tag}.png")
            self._log(trainer, name, path)
            paths.append(path)
        self.last_paths = paths
        return paths

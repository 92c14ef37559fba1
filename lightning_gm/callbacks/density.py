r"""The learned density of a 2-D model as a heat-map next to the data, saved in the run folder and logged to W&B.

For a model with an exact (or estimated) ``log_prob`` on 2-D data, :func:`density_grid` evaluates
:math:`p(x)` on a regular grid covering the data, and :class:`DensityPictures` draws it beside a
2-D histogram of the validation data. The same grid gives a check that the density is normalised:

.. math::

    \int_{[a,b]^2} p(x)\,dx \approx \sum_{ij} p(x_{ij})\, \Delta_1 \Delta_2 ,

which :func:`density_grid` returns as ``mass`` (close to 1 for a proper density whose mass lies
inside the box).

References:
    Grathwohl et al., "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
    Models", ICLR 2019 (density plots of 2-D toys).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_gm.images import save_figure

__all__ = ["DensityGrid", "density_grid", "data_bounds", "save_density", "DensityPictures"]


@dataclass
class DensityGrid:
    """A density evaluated on a grid: ``log_prob`` ``(n, n)`` (row ``i`` = ``y[i]``, column ``j`` = ``x[j]``),
    the axes ``xs``, ``ys`` ``(n,)``, and the Riemann sum ``mass`` of the density over the box."""

    log_prob: Tensor
    xs: Tensor
    ys: Tensor
    mass: float


def data_bounds(x: Tensor, margin: float = 0.1) -> tuple[float, float, float, float]:
    """``(xmin, xmax, ymin, ymax)`` of 2-D points ``(N, 2)`` widened by ``margin`` times the range on each side."""
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    pad = (hi - lo) * margin
    lo, hi = lo - pad, hi + pad
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


@torch.no_grad()
def density_grid(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Sequence[float],
    size: int = 200,
    chunk: int = 20000,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> DensityGrid:
    r"""Evaluate ``log_prob`` on a ``size x size`` grid of cell centres over ``bounds = (xmin, xmax, ymin, ymax)``.

    Returns a :class:`DensityGrid` whose ``mass`` is :math:`\sum_{ij} e^{\log p(x_{ij})} \Delta_x \Delta_y`
    (midpoint rule).
    """
    xmin, xmax, ymin, ymax = (float(b) for b in bounds)
    dx, dy = (xmax - xmin) / size, (ymax - ymin) / size
    xs = torch.linspace(xmin + dx / 2, xmax - dx / 2, size, dtype=dtype)
    ys = torch.linspace(ymin + dy / 2, ymax - dy / 2, size, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    if device is not None:
        pts = pts.to(device)
    lp = torch.cat([log_prob(p).detach().double().cpu() for p in pts.split(chunk)]).view(size, size)
    mass = float(torch.exp(torch.logsumexp(lp.flatten(), 0)) * dx * dy)
    return DensityGrid(lp, xs, ys, mass)


def save_density(grid: DensityGrid, path: str | os.PathLike, data: Optional[Tensor] = None, title: str = "") -> Path:
    """Write the density heat-map (beside a 2-D histogram of ``data`` when given) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    extent = [float(grid.xs[0]), float(grid.xs[-1]), float(grid.ys[0]), float(grid.ys[-1])]
    panels = 2 if data is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4), squeeze=False)
    ax = axes[0][0]
    if data is not None:
        d = data.detach().cpu().numpy()
        ax.hist2d(d[:, 0], d[:, 1], bins=grid.log_prob.shape[0] // 2, range=[extent[:2], extent[2:]], cmap="viridis")
        ax.set_title("data")
        ax.set_aspect("equal")
        ax = axes[0][1]
    ax.imshow(grid.log_prob.exp().numpy(), origin="lower", extent=extent, cmap="viridis", aspect="equal")
    ax.set_title(f"{title} density (mass {grid.mass:.3f})".strip())
    fig.tight_layout()
    return save_figure(fig, path)


class DensityPictures(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, draw the model's density on 2-D data as a heat-map
    beside the validation data, write it to ``<run>/samples/density_<tag>.png`` and log it to W&B
    (key ``density``), with the grid's total mass as ``val/density_mass`` (about 1 for a proper density).

    Does nothing for data that is not 2-D or a model without ``log_prob``.

    Args:
        every_n_epochs: how often (in validation epochs).
        grid_size: points per axis of the grid.
        bounds: ``[xmin, xmax, ymin, ymax]`` of the picture; default: the validation data's range plus 10%.
        num_points: validation points drawn in the data panel.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        grid_size: int = 200,
        bounds: Optional[Sequence[float]] = None,
        num_points: int = 5000,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.grid_size = grid_size
        self.bounds = list(bounds) if bounds is not None else None
        self.num_points = num_points
        self.last_path: Optional[Path] = None
        self.last_grid: Optional[DensityGrid] = None

    def _data(self, trainer: pl.Trainer) -> Optional[Tensor]:
        splits = getattr(getattr(trainer, "datamodule", None), "splits", {})
        return splits["val"][0][: self.num_points] if "val" in splits else None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not trainer.is_global_zero or tuple(getattr(pl_module, "data_shape", ())) != (2,):
            return
        if not hasattr(pl_module, "log_prob"):
            return
        self.write(trainer, pl_module, f"epoch={trainer.current_epoch:03d}")

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: Any, tag: str) -> Optional[Path]:
        """Evaluate, save and log the picture; returns its path (``None`` without bounds or data)."""
        data = self._data(trainer)
        bounds = self.bounds or (data_bounds(data) if data is not None else None)
        if bounds is None:
            return None
        was_training = pl_module.training
        pl_module.eval()
        try:
            grid = density_grid(pl_module.log_prob, bounds, self.grid_size, device=pl_module.device)
        finally:
            pl_module.train(was_training)
        path = save_density(grid, Path(trainer.default_root_dir) / "samples" / f"density_{tag}.png", data)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="density", images=[str(path)], step=trainer.global_step)
            logger.log_metrics({"val/density_mass": grid.mass}, step=trainer.global_step)
        self.last_path, self.last_grid = path, grid
        return path

"""Image grids and scatter plots written as PNG files (plain torch + Pillow/matplotlib, no torchvision)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_gm.atomic import temporary_beside

__all__ = ["as_images", "make_grid", "save_figure", "save_png", "save_scatter"]


def as_images(x: Tensor, data_shape: Sequence[int]) -> Optional[Tensor]:
    """View a batch as images ``(N, C, H, W)``: image-shaped data as is, square vectors as
    ``(1, s, s)``; ``None`` when the data is not image-like (e.g. 2-D points)."""
    shape = tuple(data_shape)
    if len(shape) == 3:
        return x.reshape(-1, *shape)
    if len(shape) == 1 and shape[0] >= 16 and math.isqrt(shape[0]) ** 2 == shape[0]:
        s = math.isqrt(shape[0])
        return x.reshape(-1, 1, s, s)
    return None


def make_grid(images: Tensor, nrow: Optional[int] = None, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile ``(N, C, H, W)`` images into one ``(C, H', W')`` image, ``nrow`` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value,
                      dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def save_png(image: Tensor, path: str | os.PathLike, scale: int = 2) -> Path:
    """Write a ``(C, H, W)`` image with values in ``[0, 1]`` as PNG (nearest-neighbour upscaled)."""
    from PIL import Image

    path = Path(path)
    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    tmp = temporary_beside(path)
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_scatter(
    points: Tensor, path: str | os.PathLike, title: str = "", reference: Optional[Tensor] = None
) -> Path:
    """Scatter plot of 2-D points (optionally beside reference data) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    panels = [("data", reference), ("samples", points)] if reference is not None else [("samples", points)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, pts) in zip(axes[0], panels):
        p = pts.detach().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
        ax.set_title(f"{title} {name}".strip())
        ax.set_aspect("equal")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = temporary_beside(path)
    fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path

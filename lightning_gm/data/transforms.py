"""Binarisation and dequantisation of image batches in ``[0, 1]`` (plain torch).

Binarisation modes (``binarize``):

``none``
    keep the grey levels.
``dynamic``
    a fresh Bernoulli sample with the grey level as probability, drawn for every training batch
    (Salakhutdinov & Murray 2008); validation and test data get one seeded sample, so their
    numbers are comparable from epoch to epoch.
``static``
    one seeded Bernoulli sample of every split, fixed for the whole run.
``threshold``
    ``x > threshold``.

Dequantisation (``dequantize=True``) turns 8-bit pixels into a continuous density problem: the
integer level ``k`` becomes ``(k + u) / L`` with ``u ~ U[0, 1)`` and ``L`` the number of levels, so a
density ``p`` on ``[0, 1]^D`` bounds the discrete likelihood:
:math:`\log P(k) \ge \mathbb E_u \log p((k+u)/L) - D \log L`.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

__all__ = ["BinarizeMode", "binarize", "dequantize", "to_unit"]

BinarizeMode = Literal["none", "dynamic", "static", "threshold"]


def to_unit(levels: Tensor, num_levels: int) -> Tensor:
    """Integer levels ``0..num_levels-1`` to floats in ``[0, 1]``."""
    return levels.float() / (num_levels - 1)


def binarize(
    x: Tensor, mode: BinarizeMode, threshold: float = 0.5, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Binarise grey levels ``x`` in ``[0, 1]``: ``dynamic``/``static`` sample, ``threshold`` cuts."""
    if mode == "none":
        return x
    if mode in ("dynamic", "static"):
        return torch.bernoulli(x, generator=generator)
    if mode == "threshold":
        return (x > threshold).to(x.dtype)
    raise ValueError(f"binarize must be one of none, dynamic, static, threshold; got {mode!r}")


def dequantize(levels: Tensor, num_levels: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Uniform dequantisation: integer levels ``k`` to ``(k + u) / num_levels``, ``u ~ U[0, 1)``."""
    u = torch.rand(levels.shape, generator=generator)
    return (levels.float() + u) / num_levels

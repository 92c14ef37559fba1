"""Two-dimensional toy densities with exact samplers, and exact log-densities where they are known.

The shapes are the ones the flow literature uses (FFJORD, Grathwohl et al. 2019; RealNVP/MAF demos):
``two_moons``, ``eight_gaussians``, ``checkerboard``, ``rings``, ``pinwheel``, ``two_spirals``,
``circles`` and ``swiss_roll``. ``eight_gaussians`` and ``checkerboard`` have closed-form densities,
so a model's test NLL can be compared with the true differential entropy.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["TOY_DENSITIES", "sample_toy", "toy_log_prob", "toy_entropy", "EIGHT_GAUSSIANS_STD"]

Sampler = Callable[[int, torch.Generator], Tensor]

#: standard deviation of each component of ``eight_gaussians`` (means on the circle of radius 2*sqrt 2)
EIGHT_GAUSSIANS_STD = 0.5 / math.sqrt(2.0)
_EIGHT_RADIUS = 4.0 / math.sqrt(2.0)


def _eight_gaussian_means(dtype: torch.dtype = torch.float32) -> Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return (_EIGHT_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)).to(dtype)


def _randn(n: int, d: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, d, generator=g)


def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g)


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    idx = torch.randint(0, 8, (n,), generator=g)
    return _eight_gaussian_means()[idx] + EIGHT_GAUSSIANS_STD * _randn(n, 2, g)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    # uniform on the 8 "black" 2x2 squares (column i + row j even) of a 4x4 board on [-4, 4]^2
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + col % 2
    u = _rand(2 * n, g).view(n, 2)
    return torch.stack([col, row], dim=1).float() * 2 - 4 + 2 * u


def _two_moons(n: int, g: torch.Generator) -> Tensor:
    t = math.pi * _rand(n, g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, t.cos(), 1 - t.cos())
    y = torch.where(upper, t.sin(), 0.5 - t.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.0
    return pts + 0.1 * _randn(n, 2, g)


def _rings(n: int, g: torch.Generator) -> Tensor:
    radius = (torch.randint(1, 5, (n,), generator=g)).float()
    t = 2 * math.pi * _rand(n, g)
    pts = torch.stack([radius * t.cos(), radius * t.sin()], dim=1)
    return pts + 0.08 * _randn(n, 2, g)


def _circles(n: int, g: torch.Generator) -> Tensor:
    radius = torch.where(torch.rand(n, generator=g) < 0.5, 1.25, 3.0)
    t = 2 * math.pi * _rand(n, g)
    return torch.stack([radius * t.cos(), radius * t.sin()], dim=1) + 0.1 * _randn(n, 2, g)


def _pinwheel(n: int, g: torch.Generator) -> Tensor:
    # Johnson et al. (2016): 5 radial arms with a tangential twist
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    features = _randn(n, 2, g) * torch.tensor([radial_std, tangential_std]) + torch.tensor([1.0, 0.0])
    labels = torch.randint(0, arms, (n,), generator=g)
    angles = labels.float() * (2 * math.pi / arms) + rate * torch.exp(features[:, 0])
    rot = torch.stack([angles.cos(), -angles.sin(), angles.sin(), angles.cos()], dim=1).view(n, 2, 2)
    return 2 * torch.einsum("nij,nj->ni", rot, features)


def _two_spirals(n: int, g: torch.Generator) -> Tensor:
    t = torch.sqrt(_rand(n, g)) * 540 * (2 * math.pi) / 360
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    pts = torch.stack([-t.cos() * t, t.sin() * t], dim=1) * sign[:, None]
    return pts / 3 + 0.1 * _randn(n, 2, g)


def _swiss_roll(n: int, g: torch.Generator) -> Tensor:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    pts = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5
    return pts + 0.1 * _randn(n, 2, g)


TOY_DENSITIES: dict[str, Sampler] = {
    "two_moons": _two_moons,
    "eight_gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "rings": _rings,
    "circles": _circles,
    "pinwheel": _pinwheel,
    "two_spirals": _two_spirals,
    "swiss_roll": _swiss_roll,
}


def sample_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """``n`` samples of shape ``(n, 2)`` (float32) from the toy density ``name``, seeded."""
    if name not in TOY_DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; choose one of {sorted(TOY_DENSITIES)}")
    return TOY_DENSITIES[name](n, torch.Generator().manual_seed(seed)).float()


def toy_log_prob(name: str, x: Tensor) -> Tensor:
    r"""Exact log-density of ``x`` ``(N, 2)`` under ``eight_gaussians`` or ``checkerboard``.

    ``eight_gaussians``: :math:`p(x) = \frac18 \sum_k \mathcal N(x; \mu_k, \sigma^2 I)`, with
    :math:`\mu_k = 2\sqrt2 (\cos k\pi/4, \sin k\pi/4)` and :math:`\sigma = 0.5/\sqrt2`.
    ``checkerboard``: :math:`1/32` on the 8 black squares of the board on :math:`[-4,4]^2`, else 0.
    """
    x = x.double()
    if name == "eight_gaussians":
        mu = _eight_gaussian_means(torch.float64)
        s2 = EIGHT_GAUSSIANS_STD**2
        sq = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
        comp = -sq / (2 * s2) - math.log(2 * math.pi * s2)
        return torch.logsumexp(comp, dim=1) - math.log(8)
    if name == "checkerboard":
        inside = (x.abs() < 4).all(dim=1)
        black = ((torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2 == 0) & inside
        return torch.where(black, torch.full_like(x[:, 0], -math.log(32)), torch.full_like(x[:, 0], -math.inf))
    raise ValueError(f"no closed-form density for toy {name!r}; known: eight_gaussians, checkerboard")


def toy_entropy(name: str, n: int = 200_000, seed: int = 1) -> tuple[float, float]:
    """Differential entropy in nats (Monte Carlo over exact samples for mixtures) and its standard error."""
    if name == "checkerboard":
        return math.log(32), 0.0
    lp = toy_log_prob(name, sample_toy(name, n, seed))
    return float(-lp.mean()), float(lp.std() / math.sqrt(n))

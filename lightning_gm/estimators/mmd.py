r"""Maximum mean discrepancy between two samples with a mixture of Gaussian kernels (plain torch).

With the kernel :math:`k(x, y) = \sum_{s} \exp\!\big(-\lVert x - y\rVert^2 / (2 \sigma_s^2)\big)` (a sum over the
bandwidths :math:`\sigma_s`, as in Li et al. 2015), samples :math:`x_{1..m} \sim P`, :math:`y_{1..n} \sim Q`:

.. math::

    \widehat{\mathrm{MMD}}^2_b = \frac{1}{m^2} \sum_{i, i'} k(x_i, x_{i'})
        + \frac{1}{n^2} \sum_{j, j'} k(y_j, y_{j'}) - \frac{2}{m n} \sum_{i, j} k(x_i, y_j)

(the biased V-statistic: never negative, exactly 0 when the two samples are the same multiset) and

.. math::

    \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)} \sum_{i \ne i'} k(x_i, x_{i'})
        + \frac{1}{n(n-1)} \sum_{j \ne j'} k(y_j, y_{j'}) - \frac{2}{m n} \sum_{i, j} k(x_i, y_j)

(the unbiased U-statistic of Gretton et al. 2012: :math:`\mathbb E[\widehat{\mathrm{MMD}}^2_u] = \mathrm{MMD}^2(P, Q)`,
so it is zero in expectation when :math:`P = Q`, and can be negative).

Squared distances are computed as :math:`\lVert x\rVert^2 + \lVert y\rVert^2 - 2 x^\top y` (clamped at 0), which
has a finite gradient at coincident points, unlike ``torch.cdist`` followed by a square.

References: Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), A Kernel Two-Sample Test; Li, Swersky &
Zemel (2015), Generative Moment Matching Networks; Dziugaite, Roy & Ghahramani (2015), Training generative
neural networks via Maximum Mean Discrepancy optimization.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["DEFAULT_BANDWIDTHS", "squared_distances", "gaussian_kernel_mixture", "mmd2"]

#: bandwidths of Li et al. (2015)'s MNIST GMMN (pixels in [0, 1], 784 dimensions)
DEFAULT_BANDWIDTHS: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    r"""Pairwise :math:`\lVert x_i - y_j\rVert^2` of ``x`` ``(m, D)`` and ``y`` ``(n, D)``: ``(m, n)``, never negative."""
    xx = (x * x).sum(-1, keepdim=True)
    yy = (y * y).sum(-1, keepdim=True)
    return (xx + yy.transpose(-2, -1) - 2.0 * x @ y.transpose(-2, -1)).clamp_min(0.0)


def gaussian_kernel_mixture(x: Tensor, y: Tensor, bandwidths: Sequence[float]) -> Tensor:
    r"""Kernel matrix :math:`K_{ij} = \sum_s \exp(-\lVert x_i - y_j\rVert^2 / (2\sigma_s^2))`, ``(m, n)``.

    Args:
        x: ``(m, D)``.
        y: ``(n, D)``.
        bandwidths: the :math:`\sigma_s` (all > 0).
    """
    if len(bandwidths) == 0 or any(float(s) <= 0 for s in bandwidths):
        raise ValueError(f"MMD bandwidths must be a non-empty list of positive numbers, got {list(bandwidths)}")
    d2 = squared_distances(x, y)
    gammas = torch.tensor([1.0 / (2.0 * float(s) ** 2) for s in bandwidths], dtype=d2.dtype, device=d2.device)
    return torch.exp(-d2.unsqueeze(-1) * gammas).sum(-1)


def mmd2(x: Tensor, y: Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, unbiased: bool = False) -> Tensor:
    r"""Squared MMD between the samples ``x`` ``(m, ...)`` and ``y`` ``(n, ...)`` (flattened to vectors), a scalar.

    Args:
        x: first sample (e.g. data), ``m`` rows.
        y: second sample (e.g. generator output), ``n`` rows, same feature size.
        bandwidths: Gaussian kernel bandwidths :math:`\sigma_s` of the mixture.
        unbiased: the U-statistic (diagonals excluded; needs ``m, n >= 2``) instead of the biased V-statistic.
    """
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"MMD of samples with different feature sizes: {x.shape[1]} and {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    kxx = gaussian_kernel_mixture(x, x, bandwidths)
    kyy = gaussian_kernel_mixture(y, y, bandwidths)
    kxy = gaussian_kernel_mixture(x, y, bandwidths)
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 examples per sample, got {m} and {n}")
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2.0 * kxy.mean()

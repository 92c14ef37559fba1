r"""Diagonal Gaussians: log-densities, the reparameterised sample and the analytic KL (plain torch).

.. math::

    \log \mathcal N(z; \mu, \operatorname{diag}\sigma^2) = -\tfrac12 \sum_i
        \left[\log 2\pi + 2\log\sigma_i + (z_i-\mu_i)^2/\sigma_i^2\right]

    \mathrm{KL}\left(\mathcal N(\mu, \operatorname{diag}\sigma^2)\,\|\,\mathcal N(0, I)\right)
        = \tfrac12 \sum_i \left[\mu_i^2 + \sigma_i^2 - 1 - 2\log\sigma_i\right]

References: Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix B.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

__all__ = ["LOG_2PI", "log_normal_diag", "log_standard_normal", "kl_normal_std_normal", "reparameterize"]

LOG_2PI = math.log(2 * math.pi)


def log_normal_diag(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """``log N(z; mu, diag exp(log_var))`` summed over the last dimension: ``(..., D) -> (...)``."""
    return -0.5 * (LOG_2PI + log_var + (z - mu) ** 2 * torch.exp(-log_var)).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over the last dimension: ``(..., D) -> (...)``."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


def kl_normal_std_normal(mu: Tensor, log_var: Tensor) -> Tensor:
    """Analytic ``KL(N(mu, diag exp(log_var)) || N(0, I))`` summed over the last dimension."""
    return 0.5 * (mu**2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)


def reparameterize(mu: Tensor, log_var: Tensor, n: Optional[int] = None) -> Tensor:
    """``z = mu + sigma * eps``: shape ``mu.shape``, or ``(n, *mu.shape)`` with ``n`` samples."""
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * log_var) * eps

r"""Observation models :math:`p(x \mid \text{params})` for decoders, injected into models from configs.

A decoder outputs ``num_params(D)`` numbers per example; the likelihood turns them into a
log-probability summed over the ``D`` data dimensions, a mean and a sample. Models never switch on
the likelihood's name: they call these methods.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.distributions import LOG_2PI

__all__ = ["Likelihood", "BernoulliLikelihood", "GaussianLikelihood"]


class Likelihood(nn.Module):
    """Base class. ``params`` has shape ``(..., num_params(D))``; ``x`` has shape ``(..., D)``."""

    def num_params(self, dim: int) -> int:
        """How many decoder outputs describe a ``dim``-dimensional example."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """``log p(x | params)`` summed over the last dimension: ``(..., D) -> (...)``."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """``E[x | params]``, shape ``(..., D)``."""
        raise NotImplementedError

    def sample(self, params: Tensor) -> Tensor:
        """One sample ``x ~ p(x | params)``, shape ``(..., D)``."""
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    r"""Independent Bernoulli pixels with logits :math:`\eta`:
    :math:`\log p(x|\eta) = \sum_i x_i \eta_i - \operatorname{softplus}(\eta_i)`."""

    def num_params(self, dim: int) -> int:
        return dim

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        # -BCE-with-logits is the numerically stable x*eta - softplus(eta)
        return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none").sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))


class GaussianLikelihood(Likelihood):
    r"""Independent Gaussians :math:`\mathcal N(x_i; \mu_i, \sigma_i^2)`.

    Args:
        learn_variance: if true the decoder outputs ``(mu, log sigma^2)`` per dimension
            (``2 D`` outputs); otherwise it outputs ``mu`` and ``sigma`` is fixed.
        sigma: the fixed standard deviation when ``learn_variance`` is false.
        min_log_var: floor on the learned log-variance (a Gaussian on [0,1] data can otherwise
            collapse onto constant pixels and its density diverge).
    """

    def __init__(self, learn_variance: bool = True, sigma: float = 1.0, min_log_var: float = -9.0) -> None:
        super().__init__()
        if not learn_variance and sigma <= 0:
            raise ValueError(f"GaussianLikelihood.sigma must be > 0, got {sigma}")
        self.learn_variance = learn_variance
        self.sigma = sigma
        self.min_log_var = min_log_var

    def num_params(self, dim: int) -> int:
        return 2 * dim if self.learn_variance else dim

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        if self.learn_variance:
            mu, log_var = params.chunk(2, dim=-1)
            return mu, log_var.clamp(min=self.min_log_var)
        return params, torch.full_like(params, 2 * math.log(self.sigma))

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mu, log_var = self._split(params)
        return -0.5 * (LOG_2PI + log_var + (x - mu) ** 2 * torch.exp(-log_var)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return self._split(params)[0]

    def sample(self, params: Tensor) -> Tensor:
        mu, log_var = self._split(params)
        return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)

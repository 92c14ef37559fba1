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

__all__ = ["Likelihood", "BernoulliLikelihood", "GaussianLikelihood", "DiscretizedLogisticLikelihood"]


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

    def params_at_mean(self, mean: Tensor) -> Tensor:
        """Parameters ``(num_params(D),)`` whose mean is ``mean`` ``(D,)`` (any other parameter at a neutral value):
        a decoder's output bias set to them starts the model at the data's mean (Burda et al.'s initialisation)."""
        raise NotImplementedError(f"{type(self).__name__} has no parameters-at-the-data-mean initialisation")


class BernoulliLikelihood(Likelihood):
    r"""Independent Bernoulli pixels with logits :math:`\eta`:
    :math:`\log p(x|\eta) = \sum_i x_i \eta_i - \operatorname{softplus}(\eta_i)`."""

    def num_params(self, dim: int) -> int:
        return dim

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        # sum_i x_i eta_i - softplus(eta_i): two reductions over the broadcast x, without the (n, B, D) copy of x and
        # the extra passes that F.binary_cross_entropy_with_logits makes (~1.7x slower on a CPU: bench/eval_speed.py);
        # softplus is log1p(exp(eta)) below 20 and eta above, accurate at both ends
        return (params * x).sum(-1) - F.softplus(params).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def params_at_mean(self, mean: Tensor) -> Tensor:
        r"""The logits :math:`\log \frac{m}{1 - m}` of the means clipped to ``[0.001, 0.999]`` (Burda et al.'s
        code)."""
        m = mean.clamp(1e-3, 1 - 1e-3)
        return torch.log(m) - torch.log1p(-m)


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

    def params_at_mean(self, mean: Tensor) -> Tensor:
        """The means (and log-variances 0 when learned)."""
        return torch.cat([mean, torch.zeros_like(mean)]) if self.learn_variance else mean.clone()


class DiscretizedLogisticLikelihood(Likelihood):
    r"""Discretised logistic pixels for ``L``-level images (Salimans et al. 2017, one component).

    Level :math:`k \in \{0..L-1\}` owns the bin :math:`[k/L, (k+1)/L)` of :math:`[0, 1]` (the outer
    bins stretch to :math:`\mp\infty`), and with :math:`F` the logistic CDF of location :math:`\mu`
    and scale :math:`s`

    .. math::

        P(k \mid \mu, s) = F\!\left(\tfrac{k+1}{L}\right) - F\!\left(\tfrac{k}{L}\right), \qquad
        \log\big(\sigma(a) - \sigma(b)\big) = \log\sigma(a) + \log\sigma(-b) + \log\big(1 - e^{b-a}\big)

    (the last identity keeps the log finite when both CDF values are close to 0 or 1).

    With ``dequantized=True`` (data ``(k + u)/L`` from a DataModule with ``dequantize: true``) the level is
    :math:`\lfloor xL \rfloor` and ``log_prob`` is the log-density of the piecewise-uniform density
    :math:`L^D \prod_i P(k_i)` on :math:`[0, 1]^D`; with the DataModule's ``bpd_offset`` of
    :math:`D \ln L` the logged bits/dim are exactly :math:`-\log_2 P(k) / D`. With ``dequantized=False``
    (data ``k/(L-1)``) the level is :math:`\operatorname{round}(x(L-1))` and ``log_prob`` is the log-mass
    :math:`\log P(k)`.

    The decoder outputs ``(mu, log s)`` per pixel (``2 D`` numbers), ``mu`` on the scale of ``[0, 1]``.

    Args:
        num_levels: ``L`` (256 for 8-bit images).
        dequantized: how the data encodes the levels (see above).
        min_log_scale: floor on ``log s``.

    References: Salimans, Karpathy, Chen & Kingma (2017), PixelCNN++; Kingma et al. (2016), IAF (section 5.2).
    """

    def __init__(self, num_levels: int = 256, dequantized: bool = True, min_log_scale: float = -7.0) -> None:
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"DiscretizedLogisticLikelihood.num_levels must be >= 2, got {num_levels}")
        self.num_levels, self.dequantized, self.min_log_scale = num_levels, dequantized, min_log_scale

    def num_params(self, dim: int) -> int:
        return 2 * dim

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_s = params.chunk(2, dim=-1)
        return mu, log_s.clamp(min=self.min_log_scale)

    def levels(self, x: Tensor) -> Tensor:
        """Integer levels (as floats) of data ``x``."""
        L = self.num_levels
        k = torch.floor(x * L) if self.dequantized else torch.round(x * (L - 1))
        return k.clamp(0, L - 1)

    def log_mass(self, k: Tensor, params: Tensor) -> Tensor:
        """``log P(k | params)`` per dimension (not summed), ``k`` integer levels as floats."""
        L = self.num_levels
        mu, log_s = self._split(params)
        inv_s = torch.exp(-log_s)
        a = (((k + 1) / L) - mu) * inv_s  # upper edge
        b = ((k / L) - mu) * inv_s  # lower edge
        width = inv_s / L  # a - b > 0
        first, last = k <= 0, k >= L - 1
        mid = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(-width))
        return torch.where(first, F.logsigmoid(a), torch.where(last, F.logsigmoid(-b), mid))

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        k = self.levels(x).expand(params.shape[:-1] + x.shape[-1:])
        lp = self.log_mass(k, params).sum(-1)
        if self.dequantized:
            lp = lp + x.shape[-1] * math.log(self.num_levels)
        return lp

    def mean(self, params: Tensor) -> Tensor:
        return self._split(params)[0].clamp(0, 1)

    def sample(self, params: Tensor) -> Tensor:
        mu, log_s = self._split(params)
        u = torch.rand_like(mu).clamp(1e-6, 1 - 1e-6)
        y = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
        k = torch.floor(y * self.num_levels).clamp(0, self.num_levels - 1)
        return (k + 0.5) / self.num_levels if self.dequantized else k / (self.num_levels - 1)

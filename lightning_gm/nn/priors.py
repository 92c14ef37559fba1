r"""Priors :math:`p(z)` over a VAE's latent space, injected into models from configs (plain torch).

A :class:`Prior` is an ``nn.Module`` with ``log_prob(z)`` (summed over the latent dimension) and
``sample(n)``. Some priors need to know the latent size (``build(latent_dim)``) and one, the
VampPrior, needs the model's encoder; the model hands it over once, through :meth:`Prior.bind`,
so the prior never owns (or double-registers) the encoder:

.. math::

    \text{StandardNormal: } & p(z) = \mathcal N(z; 0, I) \\
    \text{MixtureOfGaussians: } & p(z) = \sum_{k=1}^K \pi_k\, \mathcal N(z; m_k, \operatorname{diag} s_k^2) \\
    \text{VampPrior: } & p(z) = \frac1K \sum_{k=1}^K q(z \mid u_k) \quad (u_k \text{ learned pseudo-inputs})

References: Kingma & Welling (2014), Auto-Encoding Variational Bayes; Tomczak & Welling (2018),
VAE with a VampPrior; Dilokthanakul et al. (2016), Deep Unsupervised Clustering with Gaussian Mixture VAEs.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_gm.nn.distributions import LOG_2PI, log_normal_diag, log_standard_normal

__all__ = ["Prior", "StandardNormal", "MixtureOfGaussians", "VampPrior", "EncodeFn"]

#: ``x (K, D) -> (mu, log_var)``, each ``(K, latent_dim)``: the posterior parameters of a batch
EncodeFn = Callable[[Tensor], "tuple[Tensor, Tensor]"]


class Prior(nn.Module):
    """Base class: ``log_prob(z)`` maps ``(..., L) -> (...)``; ``sample(n)`` returns ``(n, L)``.

    ``build(latent_dim)`` is called once by the model before ``bind``; priors that have parameters
    whose shape depends on the latent size create them there.
    """

    latent_dim: int = 0
    #: whether ``KL(N(mu, sigma^2) || p)`` has a closed form here (then models may use it)
    analytic_kl: bool = False
    #: whether the prior needs the model's encoder (:meth:`bind`)
    needs_encoder: bool = False

    def build(self, latent_dim: int) -> None:
        """Set the latent dimension (create shape-dependent parameters)."""
        self.latent_dim = int(latent_dim)

    def bind(self, encode: EncodeFn, data_shape: Sequence[int]) -> None:
        """Give the prior the model's encoder ``x -> (mu, log_var)`` (only the VampPrior uses it)."""

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)``, ``(..., L) -> (...)``."""
        raise NotImplementedError

    def sample(self, n: int, device: Optional[torch.device] = None) -> Tensor:
        """``n`` samples ``(n, L)``."""
        raise NotImplementedError


class StandardNormal(Prior):
    r"""The standard normal :math:`p(z) = \mathcal N(0, I)`; its KL with a diagonal Gaussian is analytic."""

    analytic_kl = True

    def log_prob(self, z: Tensor) -> Tensor:
        return log_standard_normal(z)

    def sample(self, n: int, device: Optional[torch.device] = None) -> Tensor:
        return torch.randn(n, self.latent_dim, device=device)


def _log_mixture(log_comp: Tensor, log_weights: Tensor) -> Tensor:
    """``logsumexp_k (log w_k + log p_k)`` for component log-densities ``(..., K)``."""
    return torch.logsumexp(log_comp + log_weights, dim=-1)


class MixtureOfGaussians(Prior):
    r"""A learned mixture of ``K`` diagonal Gaussians.

    .. math::

        \log p(z) = \operatorname{logsumexp}_k \left[\log \pi_k + \log \mathcal N(z; m_k, \operatorname{diag} e^{v_k})\right],
        \qquad \pi = \operatorname{softmax}(\alpha)

    Args:
        num_components: ``K``.
        init_std: standard deviation of the random initial means (the variances start at 1).
        learn_weights: learn the mixing weights (else uniform).

    References: Dilokthanakul et al. (2016), Deep Unsupervised Clustering with Gaussian Mixture VAEs.
    """

    def __init__(self, num_components: int = 10, init_std: float = 1.0, learn_weights: bool = True) -> None:
        super().__init__()
        if num_components < 1:
            raise ValueError(f"MixtureOfGaussians.num_components must be >= 1, got {num_components}")
        self.num_components, self.init_std, self.learn_weights = num_components, init_std, learn_weights

    def build(self, latent_dim: int) -> None:
        super().build(latent_dim)
        k = self.num_components
        self.means = nn.Parameter(torch.randn(k, latent_dim) * self.init_std)
        self.log_vars = nn.Parameter(torch.zeros(k, latent_dim))
        self.logits = nn.Parameter(torch.zeros(k), requires_grad=self.learn_weights)

    def log_prob(self, z: Tensor) -> Tensor:
        comp = log_normal_diag(z.unsqueeze(-2), self.means, self.log_vars)  # (..., K)
        return _log_mixture(comp, torch.log_softmax(self.logits, 0))

    def sample(self, n: int, device: Optional[torch.device] = None) -> Tensor:
        k = torch.multinomial(torch.softmax(self.logits.detach(), 0), n, replacement=True)
        eps = torch.randn(n, self.latent_dim, device=self.means.device)
        return (self.means[k] + torch.exp(0.5 * self.log_vars[k]) * eps).detach()


class VampPrior(Prior):
    r"""The variational mixture of posteriors prior (Tomczak & Welling 2018) with learned pseudo-inputs.

    .. math::

        p_\lambda(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k), \qquad
        \log p_\lambda(z) = \operatorname{logsumexp}_k \log \mathcal N(z; \mu_\phi(u_k), \sigma^2_\phi(u_k)) - \log K

    The pseudo-inputs :math:`u_k` have the data's shape and are trained with the model; the
    encoder is the model's own (``bind``), so the prior changes as the encoder learns.

    Args:
        num_components: number of pseudo-inputs ``K`` (500 in the paper for MNIST).
        init_mean: mean of the random initial pseudo-inputs.
        init_std: their standard deviation (the paper: N(0.05, 0.01) for MNIST in [0, 1]).
        bounds: ``(low, high)``: the pseudo-inputs the encoder sees are ``hardtanh(u, low, high)`` of the
            raw parameters ``u`` (the reference implementation's ``Hardtanh(0, 1)`` for data in ``[0, 1]``;
            a raw value outside the range gets no gradient, as there). ``None``: the raw, unconstrained
            parameters are the pseudo-inputs.

    References: Tomczak & Welling (2018), VAE with a VampPrior, AISTATS.
    """

    needs_encoder = True

    def __init__(self, num_components: int = 500, init_mean: float = 0.05, init_std: float = 0.01,
                 bounds: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        if num_components < 1:
            raise ValueError(f"VampPrior.num_components must be >= 1, got {num_components}")
        if bounds is not None:
            if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
                raise ValueError(
                    f"VampPrior.bounds must be (low, high) with low < high (e.g. [0.0, 1.0] for data in [0, 1]) "
                    f"or null for unconstrained pseudo-inputs, got {bounds}"
                )
            bounds = (float(bounds[0]), float(bounds[1]))
        self.num_components, self.init_mean, self.init_std = num_components, init_mean, init_std
        self.bounds: Optional[tuple[float, float]] = bounds
        self._encode: Optional[EncodeFn] = None

    def bind(self, encode: EncodeFn, data_shape: Sequence[int]) -> None:
        # a plain attribute, not a submodule: the encoder belongs to the model
        self.__dict__["_encode"] = encode
        self.pseudo_inputs = nn.Parameter(
            torch.randn(self.num_components, int(math.prod(data_shape))) * self.init_std + self.init_mean
        )

    def inputs(self) -> Tensor:
        """The pseudo-inputs as the encoder sees them, ``(K, D)`` (clipped to ``bounds`` when set)."""
        if self._encode is None:
            raise RuntimeError("VampPrior.bind(encode, data_shape) must be called by the model before use")
        if self.bounds is None:
            return self.pseudo_inputs
        return nn.functional.hardtanh(self.pseudo_inputs, *self.bounds)

    def components(self) -> tuple[Tensor, Tensor]:
        """``(mu, log_var)`` of the ``K`` components, each ``(K, L)``."""
        return self._encode(self.inputs())

    def log_prob(self, z: Tensor) -> Tensor:
        mu, log_var = self.components()
        # sum_l (z_l - m_kl)^2 / s_kl^2 as three matrix products: (..., K) without a (..., K, L) intermediate
        # (the IWAE test evaluates N * k samples against K = 500 components: 40x less memory, ~10x faster)
        # in float64: the three terms are large and nearly cancel for narrow components (float32 lost 0.02 nats)
        # (Apple's MPS has no float64: there the sum stays in float32)
        wide = torch.float32 if z.device.type == "mps" else torch.float64
        zd, mud, lv = z.to(wide), mu.to(wide), log_var.to(wide)
        prec = torch.exp(-lv)  # (K, L)
        quad = (zd * zd) @ prec.T - 2 * (zd @ (mud * prec).T) + (mud * mud * prec).sum(-1)
        comp = -0.5 * (mu.shape[-1] * LOG_2PI + lv.sum(-1) + quad.clamp(min=0))  # (..., K)
        return (torch.logsumexp(comp, dim=-1) - math.log(self.num_components)).to(z.dtype)

    def sample(self, n: int, device: Optional[torch.device] = None) -> Tensor:
        mu, log_var = self.components()
        k = torch.randint(self.num_components, (n,), device=mu.device)
        return (mu[k] + torch.exp(0.5 * log_var[k]) * torch.randn_like(mu[k])).detach()

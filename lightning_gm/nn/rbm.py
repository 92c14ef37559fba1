r"""Restricted Boltzmann machines in plain torch: energies, free energies, conditionals and samplers.

Two visible-unit types share one small base class, :class:`RBMBase` (:mod:`lightning_gm.nn.rbm_base`), that holds everything which
only depends on the hidden layer being Bernoulli and on the energy having the form

.. math::

    E(v, h) = U(v) - h^\top\big(c + W^\top s(v)\big),

where :math:`U(v)` is the visible "self" energy and :math:`s(v)` the visible statistic seen by the
hidden units:

* :class:`BernoulliRBM` (binary visibles): :math:`U(v) = -b^\top v`, :math:`s(v) = v`.
* :class:`GaussianBernoulliRBM` (real visibles, Cho et al. 2011):
  :math:`U(v) = \sum_i (v_i - b_i)^2 / (2\sigma_i^2)`, :math:`s(v) = v / \sigma^2`.

Each subclass supplies :math:`U`, :math:`s`, the conditional :math:`p(v \mid h)` and the free
energy with the visibles integrated out; hidden conditionals, the free energy :math:`F(v)`, block
Gibbs sampling, the contrastive-divergence surrogate loss and the reconstruction error are shared.

Nothing here imports Lightning: these modules are the maths used by the RBM/DBN/DBM
LightningModules and by :mod:`lightning_gm.estimators.partition` / :mod:`lightning_gm.estimators.ais`.

Shapes: ``v`` is ``(..., n_visible)`` and ``h`` is ``(..., n_hidden)``; every per-example quantity
is returned with shape ``(...)``. All methods work for float32 and float64 parameters; inputs are
cast to the parameter dtype.

References:
    Hinton (2002), Training products of experts by minimizing contrastive divergence;
    Hinton (2010), A practical guide to training restricted Boltzmann machines (UTML TR 2010-003);
    Besag (1975), Statistical analysis of non-lattice data (pseudo-likelihood);
    Cho, Ilin & Raiko (2011), Improved learning of Gaussian-Bernoulli restricted Boltzmann machines;
    Tieleman (2008), Training RBMs using approximations to the likelihood gradient (PCD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.groups import ParameterGroup
from lightning_gm.nn.rbm_base import GibbsState, RBMBase, with_gradients
from lightning_gm.nn.sampling import bernoulli, chain_generator, chain_seed, uniform

__all__ = ["RBMBase", "BernoulliRBM", "GaussianBernoulliRBM", "GibbsState", "CD", "Penalties", "bernoulli", "uniform",
           "chain_seed", "chain_generator", "with_gradients"]


@dataclass(frozen=True)
class CD(ParameterGroup):
    """Contrastive divergence: how the negative phase of an RBM-family update is sampled.

    Args:
        k: block-Gibbs sweeps per update (CD-k, or PCD-k), >= 1.
        persistent: persistent chains (PCD, Tieleman 2008) instead of chains started at the data (CD-k).
        chains: persistent chains per process (PCD; usually the batch size), >= 1.

    References:
        Hinton (2002); Tieleman (2008).
    """

    key: ClassVar[str] = "model.init_args.cd"
    k: int = 1
    persistent: bool = True
    chains: int = 100

    def __post_init__(self) -> None:
        self.require("k", self.k >= 1, ">= 1")
        self.require("chains", self.chains >= 1, ">= 1")


@dataclass(frozen=True)
class Penalties(ParameterGroup):
    r"""The penalties of Hinton's practical guide added to the CD surrogate (see :class:`~lightning_gm.models.RBM`):
    :math:`\tfrac{\lambda_W}{2}\lVert W\rVert^2 + \lambda_s \sum_j \operatorname{sg}[q_j - p]\,\overline{x_j}`.

    Args:
        weight_cost: L2 cost :math:`\lambda_W` on ``W`` only (Hinton: 1e-4 .. 1e-2 times the learning rate scale), >= 0.
        sparsity_target: target mean activation :math:`p` of every hidden unit, in [0, 1).
        sparsity_cost: :math:`\lambda_s` (0 = no sparsity penalty), >= 0.
        sparsity_decay: decay of the running estimate :math:`q` of the activations (Hinton: 0.9 .. 0.99), in [0, 1).

    References:
        Hinton (2010), A practical guide to training restricted Boltzmann machines, sections 10-11.
    """

    key: ClassVar[str] = "model.init_args.penalties"
    weight_cost: float = 2e-4
    sparsity_target: float = 0.1
    sparsity_cost: float = 0.0
    sparsity_decay: float = 0.95

    def __post_init__(self) -> None:
        self.require("weight_cost", self.weight_cost >= 0, ">= 0")
        self.require("sparsity_target", 0 <= self.sparsity_target < 1, "in [0, 1)")
        self.require("sparsity_cost", self.sparsity_cost >= 0, ">= 0")
        self.require("sparsity_decay", 0 <= self.sparsity_decay < 1, "in [0, 1)")


_LOG_2PI = math.log(2.0 * math.pi)


class BernoulliRBM(RBMBase):
    r"""Binary-binary restricted Boltzmann machine.

    .. math::

        E(v, h) &= -v^\top W h - b^\top v - c^\top h, \qquad v \in \{0,1\}^D,\ h \in \{0,1\}^H, \\
        p(h_j = 1 \mid v) &= \sigma(c_j + v^\top W_{:j}), \qquad
        p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h), \\
        F(v) &= -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}), \qquad
        F(h) = -c^\top h - \sum_i \operatorname{softplus}(b_i + W_{i:} h).

    Args:
        n_visible: number of visible units ``D``.
        n_hidden: number of hidden units ``H``.
        **kwargs: ``weight_std`` (of the initial weights; Hinton 2010 suggests 0.01), ``dtype``, ``device``
            (:class:`~lightning_gm.nn.rbm_base.CoupledUnits`).

    References:
        Smolensky (1986); Hinton (2002); Hinton (2010), A practical guide to training RBMs.
    """

    def _visible_energy(self, v: Tensor) -> Tensor:
        # U(v) = -b'v
        return -(v @ self.b)

    def _visible_statistic(self, v: Tensor) -> Tensor:
        return v

    def visible_logits(self, h: Tensor) -> Tensor:
        r"""Pre-sigmoid visible activations :math:`b + W h`: ``(..., n_hidden) -> (..., n_visible)``."""
        return self.visible_affine(h)

    def mean_visibles(self, h: Tensor) -> Tensor:
        r""":math:`p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h)`: ``(..., n_hidden) -> (..., n_visible)``."""
        return torch.sigmoid(self.visible_logits(h))

    def sample_visibles(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw :math:`v \sim p(v \mid h)`: binary ``(..., n_visible)`` (no gradient)."""
        with torch.no_grad():
            return bernoulli(self.mean_visibles(h), generator)

    def _sample_visibles_given_mean(self, h: Tensor, v_mean: Tensor, generator: torch.Generator | None) -> Tensor:
        return bernoulli(v_mean, generator)

    def cd_gradients(
        self,
        v_data: Tensor,
        v_model: Tensor,
        data_logits: Tensor,
        weight_cost: float = 0.0,
        sparsity: Optional[tuple[Tensor, float]] = None,
        compute_value: bool = True,
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        r""":meth:`~RBMBase.cd_loss` (plus the weight-cost and sparsity terms of the RBM models) with its
        gradients written out, so no autograd graph is built: two matrix products for :math:`\partial W`.

        .. math::

            \frac{\partial \mathcal L}{\partial W} = \tfrac{1}{M} v_{\text{model}}^\top p_{\text{model}}
              - \tfrac{1}{N} v_{\text{data}}^\top p_{\text{data}} + \lambda_W W
              + \lambda_s\, \bar v_{\text{data}} (q - p^*)^\top, \quad
            \frac{\partial \mathcal L}{\partial b} = \bar v_{\text{model}} - \bar v_{\text{data}}, \quad
            \frac{\partial \mathcal L}{\partial c} = \bar p_{\text{model}} - \bar p_{\text{data}} + \lambda_s (q - p^*)

        with :math:`p = \sigma(c + W^\top v)`; the value is
        :math:`\overline{F(v_{\text{data}})} - \overline{F(v_{\text{model}})} + \tfrac{\lambda_W}{2}\lVert W\rVert^2
        + \lambda_s \sum_j (q_j - p^*)\, \overline{x_j(v_{\text{data}})}`.

        Args:
            v_data: ``(N, n_visible)``.
            v_model: ``(M, n_visible)`` negative samples.
            data_logits: :meth:`hidden_logits` of ``v_data`` (their graph, if any, is not used).
            weight_cost: :math:`\lambda_W`.
            sparsity: ``(q - p*, lambda_s)``, the sparsity signal per hidden unit and its cost, or ``None``.
            compute_value: compute the value (two softplus passes, ~8% of a CD-1 update on a CPU); when false
                the value is 0, or NaN when a gradient is not finite (so divergence still shows).

        Returns:
            ``(value, (dL/dW, dL/db, dL/dc))``; :meth:`cd_loss_closed_form` turns them into a loss.
        """
        with torch.no_grad():
            v_data, v_model = self._cast(v_data), self._cast(v_model)
            x_d = data_logits.detach()
            x_m = self.hidden_logits(v_model)
            p_d, p_m = torch.sigmoid(x_d), torch.sigmoid(x_m)
            n, m = v_data.shape[0], v_model.shape[0]
            v_d_mean = v_data.mean(0)
            g_w = torch.addmm(v_model.T @ p_m, v_data.T, p_d, beta=1.0 / m, alpha=-1.0 / n)
            g_b = v_model.mean(0) - v_d_mean
            g_c = p_m.mean(0) - p_d.mean(0)
            if compute_value:
                value = g_b @ self.b + F.softplus(x_m).sum(-1).mean() - F.softplus(x_d).sum(-1).mean()
            if weight_cost > 0:
                g_w.add_(self.W, alpha=weight_cost)
                if compute_value:
                    value = value + 0.5 * weight_cost * self.W.pow(2).sum()
            if sparsity is not None:
                signal, cost = sparsity
                g_c.add_(signal, alpha=cost)
                g_w.addr_(v_d_mean, signal, alpha=cost)
                if compute_value:
                    value = value + cost * (signal * x_d.mean(0)).sum()
            if not compute_value:
                value = (g_b.sum() + g_c.sum()) * 0.0
        return value, (g_w, g_b, g_c)

    def cd_loss_closed_form(self, v_data: Tensor, v_model: Tensor, data_logits: Tensor, **kwargs: Any) -> Tensor:
        """The loss of :meth:`cd_gradients` (same arguments, ``kwargs`` by keyword): a scalar with that value and
        those gradients (no graph to differentiate; under Lightning's ``manual_backward`` DDP all-reduces the
        gradients)."""
        value, grads = self.cd_gradients(v_data, v_model, data_logits, **kwargs)
        return with_gradients(value, (self.W, self.b, self.c), grads)

    def free_energy_hidden(self, h: Tensor) -> Tensor:
        r"""Free energy with the visibles summed out.

        .. math:: F(h) = -\log \sum_{v} e^{-E(v, h)} = -c^\top h - \sum_i \operatorname{softplus}(b_i + W_{i:} h)

        Args:
            h: ``(..., n_hidden)``.

        Returns:
            ``(...)``.
        """
        h = self._cast(h)
        # softplus = overflow-safe log(1 + exp(.)), see free_energy.
        return -(h @ self.c) - F.softplus(self.visible_logits(h)).sum(-1)

    @torch.no_grad()
    def init_visible_bias_from_data(self, x: Tensor, eps: float = 1e-3) -> None:
        r"""Set :math:`b_i = \log\frac{p_i}{1 - p_i}` with :math:`p_i` the data mean of unit ``i``.

        Hinton (2010, section 8.1): with zero weights the RBM's visible marginals then equal the
        data marginals. :math:`p_i` is clamped to ``[eps, 1 - eps]`` so that units that are always
        off/on get a finite bias (``|b_i| <= log((1 - eps) / eps)``, 6.9 for the default).

        Args:
            x: data ``(N, n_visible)`` with values in ``[0, 1]``.
            eps: clamping margin.
        """
        p = self._cast(x).reshape(-1, self.n_visible).mean(0).clamp(eps, 1.0 - eps)
        # log(p) - log1p(-p): log1p keeps precision for p close to 0.
        self.b.copy_(torch.log(p) - torch.log1p(-p))

    def pseudo_log_likelihood(
        self,
        v: Tensor,
        generator: torch.Generator | None = None,
        flip_index: Tensor | None = None,
    ) -> Tensor:
        r"""Stochastic pseudo-log-likelihood, as scikit-learn's ``BernoulliRBM.score_samples``.

        For each example one coordinate :math:`i` is drawn uniformly and

        .. math::

            \widehat{\mathrm{PLL}}(v) = D \log p(v_i \mid v_{-i})
                = D \log \sigma\big(F(\tilde v) - F(v)\big),

        where :math:`\tilde v` is ``v`` with bit ``i`` flipped. Its expectation over ``i`` is the
        pseudo-log-likelihood :math:`\sum_i \log p(v_i \mid v_{-i})` (Besag 1975).

        Args:
            v: binary ``(N, n_visible)``.
            generator: random generator for the flipped coordinates.
            flip_index: optional ``(N,)`` long tensor fixing the flipped coordinate per example.

        Returns:
            ``(N,)``.
        """
        v = self._cast(v)
        n, d = v.shape
        if flip_index is None:
            flip_index = torch.randint(0, d, (n,), generator=generator, device=v.device)
        flip_index = flip_index.to(v.device)
        rows = torch.arange(n, device=v.device)
        v_flip = v.clone()
        v_flip[rows, flip_index] = 1.0 - v_flip[rows, flip_index]
        # log sigma(x) via logsigmoid = -softplus(-x): finite for large |x|.
        return d * F.logsigmoid(self.free_energy(v_flip) - self.free_energy(v))


class GaussianBernoulliRBM(RBMBase):
    r"""Gaussian-Bernoulli RBM for real-valued visibles (Cho, Ilin & Raiko 2011 parameterisation).

    .. math::

        E(v, h) &= \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2}
                  - \sum_{ij} \frac{v_i}{\sigma_i^2} W_{ij} h_j - c^\top h, \\
        p(v_i \mid h) &= \mathcal{N}\big(v_i;\ b_i + W_{i:} h,\ \sigma_i^2\big), \qquad
        p(h_j = 1 \mid v) = \sigma\Big(c_j + \sum_i \frac{v_i}{\sigma_i^2} W_{ij}\Big), \\
        F(v) &= \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2}
               - \sum_j \operatorname{softplus}\Big(c_j + \sum_i \frac{v_i}{\sigma_i^2} W_{ij}\Big), \\
        F(h) &= -c^\top h - \sum_i \Big[\frac{b_i m_i + m_i^2 / 2}{\sigma_i^2}
               + \tfrac12 \log(2\pi\sigma_i^2)\Big], \quad m = W h.

    The ``v / sigma^2`` (rather than ``v / sigma``, Hinton 2010) coupling makes the conditional mean of
    ``v`` independent of ``sigma`` and the learning of ``sigma`` better behaved (Cho et al. 2011).
    ``sigma`` is stored as ``log_sigma`` (a parameter when ``learn_sigma`` else a buffer) so it stays
    positive under unconstrained optimisation.

    Args:
        n_visible, n_hidden: layer sizes.
        sigma: initial (or fixed) standard deviation, a float or a ``(n_visible,)`` tensor.
        learn_sigma: learn ``log_sigma`` by gradient descent when True.
        **kwargs: ``weight_std``, ``dtype``, ``device`` (:class:`~lightning_gm.nn.rbm_base.CoupledUnits`).

    References:
        Cho, Ilin & Raiko (2011), Improved learning of Gaussian-Bernoulli restricted Boltzmann
        machines, ICANN; Hinton (2010), section 13.2; Welling, Rosen-Zvi & Hinton (2005).
    """

    log_sigma: Tensor

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        sigma: float | Tensor = 1.0,
        learn_sigma: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_visible=n_visible, n_hidden=n_hidden, **kwargs)
        sigma_t = torch.as_tensor(sigma, dtype=self.W.dtype, device=self.W.device)
        if torch.any(sigma_t <= 0):
            raise ValueError("sigma must be positive")
        self.learn_sigma = bool(learn_sigma)
        self._register("log_sigma", torch.log(sigma_t).expand(n_visible).clone(), self.learn_sigma)

    @property
    def sigma(self) -> Tensor:
        """Visible standard deviations, ``(n_visible,)``."""
        return self.log_sigma.exp()

    @property
    def variance(self) -> Tensor:
        r""":math:`\sigma^2 = e^{2 \log\sigma}`, ``(n_visible,)``."""
        return torch.exp(2.0 * self.log_sigma)

    def _visible_energy(self, v: Tensor) -> Tensor:
        # U(v) = sum_i (v_i - b_i)^2 / (2 sigma_i^2); the inverse variance exp(-2 log sigma) avoids a division.
        return 0.5 * ((v - self.b).pow(2) * torch.exp(-2.0 * self.log_sigma)).sum(-1)

    def _visible_statistic(self, v: Tensor) -> Tensor:
        # s(v) = v / sigma^2
        return v * torch.exp(-2.0 * self.log_sigma)

    def mean_visibles(self, h: Tensor) -> Tensor:
        r""":math:`E[v \mid h] = b + W h`: ``(..., n_hidden) -> (..., n_visible)``."""
        return self.visible_affine(h)

    def sample_visibles(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw :math:`v \sim \mathcal{N}(b + W h, \operatorname{diag}\sigma^2)`: ``(..., n_visible)``.

        Reparameterised (``mean + sigma * eps``), so it is differentiable in the parameters.
        """
        return self._sample_visibles_given_mean(h, self.mean_visibles(h), generator)

    def _sample_visibles_given_mean(self, h: Tensor, v_mean: Tensor, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(v_mean.shape, generator=generator, dtype=v_mean.dtype, device=v_mean.device)
        return v_mean + self.sigma * eps

    def free_energy_hidden(self, h: Tensor) -> Tensor:
        r"""Free energy with the (continuous) visibles integrated out.

        Completing the square in each :math:`v_i` gives, with :math:`m = W h`,

        .. math::

            F(h) = -\log \int e^{-E(v, h)}\, dv
                 = -c^\top h - \sum_i \Big[\frac{b_i m_i + m_i^2/2}{\sigma_i^2} + \tfrac12\log(2\pi\sigma_i^2)\Big].

        Args:
            h: ``(..., n_hidden)``.

        Returns:
            ``(...)``.
        """
        h = self._cast(h)
        m = h @ self.W.T
        inv_var = torch.exp(-2.0 * self.log_sigma)
        # log(2 pi sigma^2) = log(2 pi) + 2 log sigma: stays finite for tiny sigma.
        log_norm = 0.5 * (_LOG_2PI + 2.0 * self.log_sigma)
        return -(h @ self.c) - ((self.b * m + 0.5 * m.pow(2)) * inv_var + log_norm).sum(-1)

    @torch.no_grad()
    def init_visible_bias_from_data(self, x: Tensor, init_sigma: bool = False, min_sigma: float = 1e-3) -> None:
        r"""Set :math:`b` to the data mean (the visible marginal with zero weights is then
        :math:`\mathcal{N}(\bar x, \sigma^2)`); with ``init_sigma`` also set :math:`\sigma` to the
        per-unit data standard deviation, clamped below at ``min_sigma``.

        Args:
            x: data ``(N, n_visible)``.
            init_sigma: also initialise ``log_sigma``.
            min_sigma: lower clamp for the standard deviation.
        """
        x = self._cast(x).reshape(-1, self.n_visible)
        self.b.copy_(x.mean(0))
        if init_sigma:
            std = x.std(0, correction=1 if x.shape[0] > 1 else 0).clamp_min(min_sigma)
            self.log_sigma.copy_(torch.log(std))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", learn_sigma={self.learn_sigma}"

r"""Log-partition functions of the RBM variants: the subspace RBM and the spike-and-slab RBM.

Exact :math:`\log Z` by enumeration for tiny models, and :class:`~lightning_gm.estimators.ais.AnnealingPath`
implementations for :func:`~lightning_gm.estimators.ais.ais_log_partition`:

* :class:`SubspaceRBMAnnealingPath` (Salakhutdinov & Murray's base-rate path, written for the subspace RBM):

  .. math::

      \log f_\beta(x) = (1-\beta)\, b_A^\top x + \beta\, b^\top x
        + \sum_j \operatorname{logaddexp}\Big(K\log 2,\ \beta c_j + \sum_k \operatorname{softplus}(\beta a_{jk}(x))\Big),

  the marginal of :math:`p_\beta(x,h,S) \propto e^{(1-\beta) b_A^\top x - \beta E'(x,h,S)}` (:math:`E'` the
  energy without the visible bias), so :math:`\log Z_0 = \sum_i \operatorname{softplus}(b_{A,i}) + M(K+1)\log 2`
  and the transition is the model's block Gibbs sweep at inverse temperature :math:`\beta`.

* :class:`SpikeSlabAnnealingPath` for :class:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet` (see there for the energy):
  the base is a diagonal Gaussian :math:`\mathcal N(a, \operatorname{diag}\tau^{-1})` times the slab prior
  :math:`\mathcal N(0, \alpha^{-1})` times uniform spikes, and

  .. math::

      \log f_\beta(v) = -(1-\beta)\tfrac12\sum_d \tau_d (v_d - a_d)^2 - \beta\, \tfrac12 v^\top\Lambda v
          + \sum_i \Big[\tfrac12\log\frac{2\pi}{\alpha_i} + \operatorname{softplus}(\ell_{\beta,i}(v))\Big],

  with the spike log-odds at :math:`\beta` of :meth:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet.spike_logits`;
  :math:`\log Z_0 = \sum_d \tfrac12\log(2\pi/\tau_d) + \sum_i [\tfrac12\log(2\pi/\alpha_i) + \log 2]`.
  Every intermediate distribution is normalisable (its conditional precision of ``v`` given ``h`` is
  at least :math:`(1-\beta)\tau + \beta\lambda_{\min}`, see the ssRBM class docstring).

References:
    Neal (2001), Annealed importance sampling; Salakhutdinov & Murray (2008), On the quantitative analysis
    of deep belief networks; Tomczak & Gonczarek (2017); Courville, Bergstra & Bengio (2011).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gm.estimators.ais import AnnealingPath, LastStateCache
from lightning_gm.estimators.partition import base_parameter, check_enumerable, frozen_copy, logsumexp_over_binary
from lightning_gm.nn.ssrbm import SpikeSlabRBMNet
from lightning_gm.nn.subspace_rbm import SubspaceRBMNet

__all__ = [
    "SubspaceRBMAnnealingPath",
    "SpikeSlabAnnealingPath",
    "subspace_rbm_log_partition_enumerate",
    "ssrbm_log_partition_enumerate",
]


# ---------------------------------------------------------------------------------------- subspace RBM
class SubspaceRBMAnnealingPath(AnnealingPath[Tensor]):
    r"""AIS path from a base-rate model (visible biases :math:`b_A`, no couplings) to a subspace RBM.

    See the module docstring for :math:`\log f_\beta`. Transition at :math:`\beta`: :math:`h_j \sim
    \sigma(\beta c_j + \sum_k \operatorname{softplus}(\beta a_{jk}) - K\log 2)`, :math:`S_{jk} \sim
    \sigma(\beta h_j a_{jk})`, :math:`x_i \sim \sigma((1-\beta) b_{A,i} + \beta(b_i + \sum_{jk} W_{ijk} h_j S_{jk}))`.
    Runs in float64 on a detached copy.

    Args:
        net: the target :class:`~lightning_gm.nn.subspace_rbm.SubspaceRBMNet`.
        base_visible_bias: :math:`b_A` ``(D,)`` (default zeros); the data's log-odds are the usual choice.

    References:
        Salakhutdinov & Murray (2008); Tomczak & Gonczarek (2017).
    """

    def __init__(self, net: SubspaceRBMNet, base_visible_bias: Optional[Tensor] = None) -> None:
        self.net = frozen_copy(net)
        b = self.net.b
        self.b_base = base_parameter(base_visible_bias, tuple(b.shape), "base_visible_bias", b.device)
        self._a = LastStateCache(self.net.subspace_logits)

    def log_z_base(self) -> float:
        n = self.net
        return float(F.softplus(self.b_base).sum()) + n.n_gates * (n.subspace_size + 1) * math.log(2.0)

    def sample_base(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.b_base).expand(n, -1), generator=generator)

    def _hidden_part(self, a: Tensor, beta: float) -> Tensor:
        g = beta * self.net.c + F.softplus(beta * a).sum(-1)
        return torch.logaddexp(torch.full_like(g, self.net.subspace_size * math.log(2.0)), g).sum(-1)

    def log_unnormalized(self, state: Tensor, beta: float) -> Tensor:
        x = state.to(torch.float64)
        return (1.0 - beta) * (x @ self.b_base) + beta * (x @ self.net.b) + self._hidden_part(self._a(x), beta)

    def log_ratio(self, state: Tensor, beta_from: float, beta_to: float) -> Tensor:
        x = state.to(torch.float64)
        a = self._a(x)
        linear = (beta_to - beta_from) * (x @ (self.net.b - self.b_base))
        return linear + self._hidden_part(a, beta_to) - self._hidden_part(a, beta_from)

    def transition(self, state: Tensor, beta: float, generator: Optional[torch.Generator] = None) -> Tensor:
        x = state.to(torch.float64)
        a = self._a(x)
        k_log2 = self.net.subspace_size * math.log(2.0)
        h = torch.bernoulli(torch.sigmoid(beta * self.net.c + F.softplus(beta * a).sum(-1) - k_log2), generator=generator)
        S = torch.bernoulli(torch.sigmoid(beta * h.unsqueeze(-1) * a), generator=generator)
        logits = (1.0 - beta) * self.b_base + beta * self.net.visible_logits(h.unsqueeze(-1) * S)
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)


def subspace_rbm_log_partition_enumerate(net: SubspaceRBMNet, max_units: int = 25) -> float:
    r"""Exact :math:`\log Z` of a subspace RBM: :math:`\log\sum_x e^{-F(x)}` (``D`` binary units) or
    :math:`\log\sum_{h,S} e^{-F(h,S)}` (``M(K+1)`` units), whichever is smaller. Float64.

    Raises:
        EnumerationTooLargeError: if the smaller side has more than ``max_units`` units.
    """
    m = frozen_copy(net)
    assert isinstance(m, SubspaceRBMNet)
    n_hid = m.n_gates * (m.subspace_size + 1)
    with torch.no_grad():
        if m.n_visible <= n_hid:
            check_enumerable(m.n_visible, max_units, "subspace_rbm_log_partition_enumerate")
            return float(logsumexp_over_binary(m.n_visible, lambda x: -m.free_energy(x)))
        check_enumerable(n_hid, max_units, "subspace_rbm_log_partition_enumerate")

        def log_fn(u: Tensor) -> Tensor:
            h = u[:, : m.n_gates]
            S = u[:, m.n_gates:].reshape(-1, m.n_gates, m.subspace_size)
            return -m.free_energy_hidden(h, S)

        return float(logsumexp_over_binary(n_hid, log_fn))


# ---------------------------------------------------------------------------------------- spike-and-slab RBM
class SpikeSlabAnnealingPath(AnnealingPath[Tensor]):
    r"""AIS path from a diagonal Gaussian base to a spike-and-slab RBM (see the module docstring).

    Transition at :math:`\beta` (all conditionals of :math:`p_\beta(v, s, h)`): :math:`h_i \sim \sigma(\ell_{\beta,i}(v))`,
    :math:`s_i \sim \mathcal N\big(\beta h_i (v^\top W_i + \alpha_i\mu_i)/\alpha_i,\ \alpha_i^{-1}\big)`,
    :math:`v \sim \mathcal N(m, \operatorname{diag} p^{-1})` with precision
    :math:`p = (1-\beta)\tau + \beta(\lambda + \sum_i h_i \phi_i)` and
    :math:`m = p^{-1}\big((1-\beta)\tau a + \beta \sum_i h_i s_i W_i\big)`. Float64 on a detached copy.

    Args:
        net: the target :class:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet`.
        base_mean: :math:`a` ``(D,)`` (default zeros).
        base_precision: :math:`\tau` ``(D,)`` or a float (default 1), positive.

    References:
        Neal (2001); Courville, Bergstra & Bengio (2011).
    """

    def __init__(self, net: SpikeSlabRBMNet, base_mean: Optional[Tensor] = None,
                 base_precision: Optional[Tensor | float] = None) -> None:
        self.net = frozen_copy(net)
        d, device = (self.net.n_visible,), self.net.W.device
        self.a = base_parameter(base_mean, d, "base_mean", device)
        self.tau = base_parameter(base_precision, d, "base_precision", device, default=1.0)
        if torch.any(self.tau <= 0):
            raise ValueError("base_precision must be positive")
        with torch.no_grad():
            self.lam, self.alpha, self.phi = self.net.visible_precision, self.net.slab_precision, self.net.phi
        self._stats = LastStateCache(self.net.projections)

    def log_z_base(self) -> float:
        half_log_2pi = 0.5 * math.log(2.0 * math.pi)
        vis = float((half_log_2pi - 0.5 * self.tau.log()).sum())
        hid = float((half_log_2pi - 0.5 * self.alpha.log() + math.log(2.0)).sum())
        return vis + hid

    def sample_base(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        eps = torch.randn((n, self.a.shape[0]), generator=generator, dtype=torch.float64, device=self.a.device)
        return self.a + eps * self.tau.rsqrt()

    def _log_f(self, v: Tensor, x: Tensor, q: Tensor, beta: float) -> Tensor:
        base = 0.5 * (self.tau * (v - self.a).pow(2)).sum(-1)
        target = 0.5 * (self.lam * v.pow(2)).sum(-1)
        spikes = F.softplus(self.net.spike_logits_from(x, q, beta)).sum(-1)
        return -(1.0 - beta) * base - beta * target + spikes

    def log_unnormalized(self, state: Tensor, beta: float) -> Tensor:
        v = state.to(torch.float64)
        x, q = self._stats(v)
        return self._log_f(v, x, q, beta)

    def log_ratio(self, state: Tensor, beta_from: float, beta_to: float) -> Tensor:
        v = state.to(torch.float64)
        x, q = self._stats(v)
        return self._log_f(v, x, q, beta_to) - self._log_f(v, x, q, beta_from)

    def transition(self, state: Tensor, beta: float, generator: Optional[torch.Generator] = None) -> Tensor:
        v = state.to(torch.float64)
        x, q = self._stats(v)
        h = torch.bernoulli(torch.sigmoid(self.net.spike_logits_from(x, q, beta)), generator=generator)
        s = self.net.sample_slabs_from(x, h, beta, generator)
        prec = (1.0 - beta) * self.tau + beta * (self.lam + h @ self.phi)
        mean = ((1.0 - beta) * self.tau * self.a + beta * (h * s) @ self.net.W.T) / prec
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float64, device=mean.device)
        return mean + eps * prec.rsqrt()


def ssrbm_log_partition_enumerate(net: SpikeSlabRBMNet, max_units: int = 16, chunk_size: int = 1024) -> float:
    r"""Exact :math:`\log Z = \log\sum_h e^{-F(h)}` of a spike-and-slab RBM: the slabs and the visibles are
    integrated out in closed form for each of the :math:`2^N` spike configurations
    (:meth:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet.free_energy_hidden`, one ``D x D`` Cholesky each). Float64.

    Raises:
        EnumerationTooLargeError: if ``N > max_units``.
    """
    check_enumerable(net.n_hidden, max_units, "ssrbm_log_partition_enumerate")
    m = frozen_copy(net)
    assert isinstance(m, SpikeSlabRBMNet)
    with torch.no_grad():
        return float(logsumexp_over_binary(m.n_hidden, lambda h: -m.free_energy_hidden(h), chunk_size=chunk_size))

r"""The spike-and-slab RBM (µ-ssRBM variant with diagonal precisions) in plain torch.

Real visibles :math:`v \in \mathbb R^D`, binary spikes :math:`h \in \{0,1\}^N` and one real slab
:math:`s_i` per spike (Courville, Bergstra & Bengio 2011):

.. math::

    E(v, s, h) = \tfrac12 v^\top\Big(\Lambda + \sum_i h_i \Phi_i\Big) v - \sum_i h_i s_i\, v^\top W_i
        + \tfrac12 \sum_i \alpha_i (s_i - \mu_i h_i)^2 - b^\top h,

with :math:`\Lambda = \operatorname{diag}\lambda` and :math:`\Phi_i = \operatorname{diag}\phi_i`. With
:math:`x_i = v^\top W_i` and :math:`q_i = v^\top\Phi_i v`, the conditionals are

.. math::

    p(s_i \mid v, h) &= \mathcal N\big(h_i(\mu_i + x_i / \alpha_i),\ \alpha_i^{-1}\big), \\
    p(v \mid s, h) &= \mathcal N\Big(C_h \sum_i h_i s_i W_i,\ C_h\Big), \quad
        C_h = \operatorname{diag}\big(\lambda + \textstyle\sum_i h_i \phi_i\big)^{-1}, \\
    p(h_i = 1 \mid v) &= \sigma(\ell_i(v)), \quad
        \ell_i(v) = b_i - \tfrac12 q_i + \mu_i x_i + \frac{x_i^2}{2\alpha_i}
        \quad (\text{slab integrated out}),

and the free energy (spikes summed, slabs integrated) is

.. math::

    F(v) = \tfrac12 v^\top\Lambda v - \sum_i \Big[\tfrac12\log\frac{2\pi}{\alpha_i} + \operatorname{softplus}(\ell_i(v))\Big].

**Normalisability.** Integrating the slabs out of :math:`e^{-E}` for a fixed :math:`h` leaves a Gaussian in
:math:`v` with precision :math:`P_h = \Lambda + \sum_i h_i(\Phi_i - \alpha_i^{-1} W_i W_i^\top)`, so the model
is normalisable **iff** :math:`P_h \succ 0` for every :math:`h \in \{0,1\}^N` (then
:math:`-F(h) = b^\top h + \sum_i \tfrac12\log\frac{2\pi}{\alpha_i} + \tfrac D2\log 2\pi - \tfrac12\log\det P_h
+ \tfrac12 r_h^\top P_h^{-1} r_h` with :math:`r_h = \sum_i h_i \mu_i W_i`). This class enforces the
sufficient condition :math:`\Lambda \succ 0` and :math:`\Phi_i \succeq \alpha_i^{-1} W_i W_i^\top` for every
unit by its parameterisation:

.. math::

    \lambda_d = \lambda_{\min} + \operatorname{softplus}(\tilde\lambda_d), \quad
    \alpha_i = \alpha_{\min} + \operatorname{softplus}(\tilde\alpha_i), \quad
    \phi_{id} = \frac{|W_{di}|\, \lVert W_i\rVert_1}{\alpha_i} + \operatorname{softplus}(\tilde\phi_{id}).

By Cauchy-Schwarz :math:`(u^\top W_i)^2 \le \lVert W_i\rVert_1 \sum_d |W_{di}| u_d^2`, so
:math:`\Phi_i - \alpha_i^{-1}W_iW_i^\top \succeq 0` (the diagonal part :math:`|W_i|\lVert W_i\rVert_1/\alpha_i` is the
smallest-trace diagonal matrix that dominates :math:`W_iW_i^\top/\alpha_i`) and :math:`P_h \succeq \Lambda \succeq
\lambda_{\min} I` for every :math:`h`: any value of the unconstrained parameters gives a proper density.

Every quantity takes an inverse temperature ``beta`` that scales the coupling part of the energy
(everything except :math:`\tfrac12 v^\top\Lambda v` and :math:`\tfrac12\alpha_i s_i^2`), for the AIS path of
:class:`~lightning_gm.estimators.rbm_variants.SpikeSlabAnnealingPath`; the spike log-odds at :math:`\beta` are
:math:`\ell_{\beta,i} = \beta(b_i - \tfrac12 q_i - \tfrac12\alpha_i\mu_i^2) + \beta^2 (x_i + \alpha_i\mu_i)^2 / (2\alpha_i)`.

References:
    Courville, Bergstra & Bengio (2011), A spike and slab restricted Boltzmann machine, AISTATS;
    Courville, Bergstra & Bengio (2011), Unsupervised models of images by spike-and-slab RBMs, ICML (µ-ssRBM).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.rbm import GibbsState
from lightning_gm.nn.rbm_base import CoupledUnits

__all__ = ["SpikeSlabRBMNet", "inverse_softplus"]

_LOG_2PI = math.log(2.0 * math.pi)


def inverse_softplus(y: Tensor) -> Tensor:
    r""":math:`\log(e^y - 1)` for :math:`y > 0` (``expm1`` for accuracy at small ``y``; ``y`` itself above 20)."""
    return torch.where(y > 20, y, torch.log(torch.expm1(y.clamp_max(20))))


class SpikeSlabRBMNet(CoupledUnits):
    r"""Spike-and-slab RBM maths (energy, conditionals, free energies, Gibbs); see the module docstring.

    Args:
        n_visible: ``D``.
        n_hidden: ``N`` spike units (one scalar slab each).
        visible_precision: initial :math:`\lambda` (float, > ``min_precision``).
        slab_precision: initial :math:`\alpha` (float, > ``min_precision``).
        phi: initial extra visible precision :math:`\operatorname{softplus}(\tilde\phi)` per spike and pixel (> 0).
        slab_mean: initial :math:`\mu`.
        spike_bias: initial :math:`b`.
        min_precision: the margin :math:`\lambda_{\min} = \alpha_{\min}` (> 0).
        learn_visible_precision: learn :math:`\tilde\lambda` (else a buffer).
        learn_phi: learn :math:`\tilde\phi` (else a buffer).
        **kwargs: ``weight_std`` (of the initial ``W``), ``dtype``, ``device``
            (:class:`~lightning_gm.nn.rbm_base.CoupledUnits`).

    Raises:
        ValueError: naming the argument if a precision is not above ``min_precision`` or ``phi <= 0``.

    References:
        Courville, Bergstra & Bengio (2011), AISTATS and ICML.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        visible_precision: float = 1.0,
        slab_precision: float = 1.0,
        phi: float = 0.01,
        slab_mean: float = 0.0,
        spike_bias: float = 0.0,
        min_precision: float = 1e-3,
        learn_visible_precision: bool = True,
        learn_phi: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__({"n_visible": n_visible, "n_hidden": n_hidden}, **kwargs)
        if not min_precision > 0:
            raise ValueError(f"min_precision must be > 0, got {min_precision}")
        for name, value in (("visible_precision", visible_precision), ("slab_precision", slab_precision)):
            if not value > min_precision:
                raise ValueError(f"{name} must be > min_precision={min_precision} (a positive precision), got {value}")
        if not phi > 0:
            raise ValueError(f"phi must be > 0, got {phi}")
        self.min_precision = float(min_precision)
        self.b = nn.Parameter(self._filled(n_hidden, value=spike_bias))
        self.mu = nn.Parameter(self._filled(n_hidden, value=slab_mean))
        self.alpha_raw = nn.Parameter(inverse_softplus(self._filled(n_hidden, value=slab_precision - min_precision)))
        self.learn_visible_precision, self.learn_phi = bool(learn_visible_precision), bool(learn_phi)
        lam = inverse_softplus(self._filled(n_visible, value=visible_precision - min_precision))
        self._register("lambda_raw", lam, self.learn_visible_precision)
        self._register("phi_raw", inverse_softplus(self._filled(n_hidden, n_visible, value=phi)), self.learn_phi)

    # ------------------------------------------------------------------ constrained parameters
    @property
    def visible_precision(self) -> Tensor:
        r""":math:`\lambda = \lambda_{\min} + \operatorname{softplus}(\tilde\lambda)`, ``(D,)``."""
        return self.min_precision + F.softplus(self.lambda_raw)

    @property
    def slab_precision(self) -> Tensor:
        r""":math:`\alpha = \alpha_{\min} + \operatorname{softplus}(\tilde\alpha)`, ``(N,)``."""
        return self.min_precision + F.softplus(self.alpha_raw)

    @property
    def phi(self) -> Tensor:
        r""":math:`\phi_{id} = |W_{di}|\,\lVert W_i\rVert_1/\alpha_i + \operatorname{softplus}(\tilde\phi_{id})`, ``(N, D)``."""
        w = self.W.abs().T  # (N, D)
        return w * w.sum(-1, keepdim=True) / self.slab_precision.unsqueeze(-1) + F.softplus(self.phi_raw)

    def conditional_precision(self, h: Tensor) -> Tensor:
        r""":math:`P_h = \Lambda + \sum_i h_i(\Phi_i - \alpha_i^{-1}W_iW_i^\top)`, ``(..., N) -> (..., D, D)`` (tests, exact log Z)."""
        h = self._cast(h)
        diag = torch.diag_embed(self.visible_precision + h @ self.phi)
        wa = self.W * (h / self.slab_precision).unsqueeze(-2)  # (..., D, N)
        return diag - wa @ self.W.T

    # ------------------------------------------------------------------ spikes
    def projections(self, v: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`x_i = v^\top W_i` and :math:`q_i = v^\top\Phi_i v`, both ``(..., N)``."""
        v = self._cast(v)
        return v @ self.W, v.pow(2) @ self.phi.T

    def spike_logits_from(self, x: Tensor, q: Tensor, beta: float = 1.0) -> Tensor:
        r""":math:`\ell_{\beta,i} = \beta(b_i - \tfrac12 q_i - \tfrac12\alpha_i\mu_i^2) + \beta^2(x_i + \alpha_i\mu_i)^2/(2\alpha_i)`."""
        alpha = self.slab_precision
        return beta * (self.b - 0.5 * q - 0.5 * alpha * self.mu.pow(2)) + beta**2 * (x + alpha * self.mu).pow(2) / (2.0 * alpha)

    def hidden_logits(self, v: Tensor, beta: float = 1.0) -> Tensor:
        r"""Spike log-odds :math:`\ell_i(v)` with the slab integrated out, ``(..., D) -> (..., N)``."""
        x, q = self.projections(v)
        return self.spike_logits_from(x, q, beta)

    def mean_hiddens(self, v: Tensor) -> Tensor:
        r""":math:`p(h_i = 1 \mid v)`, ``(..., N)``."""
        return torch.sigmoid(self.hidden_logits(v))

    def slab_mean(self, x: Tensor, h: Tensor, beta: float = 1.0) -> Tensor:
        r""":math:`E[s_i \mid v, h] = \beta h_i (x_i + \alpha_i\mu_i)/\alpha_i` (:math:`\mu_i + x_i/\alpha_i` at :math:`\beta = 1`)."""
        return beta * h * (x / self.slab_precision + self.mu)

    def sample_slabs_from(self, x: Tensor, h: Tensor, beta: float = 1.0, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Draw :math:`s \sim p(s \mid v, h)` given :math:`x = v^\top W`: mean :meth:`slab_mean`, variance :math:`1/\alpha_i`."""
        mean = self.slab_mean(x, h, beta)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + eps * self.slab_precision.rsqrt()

    # ------------------------------------------------------------------ visibles
    def visible_moments(self, h: Tensor, s: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        r"""Mean and (diagonal) variance of :math:`p(v \mid s, h)`: :math:`C_h \sum_i h_i s_i W_i` and
        :math:`C_h = 1/(\lambda + \sum_i h_i\phi_i)`, both ``(..., D)`` (``s = None``: slabs at 0)."""
        h = self._cast(h)
        var = 1.0 / (self.visible_precision + h @ self.phi)
        if s is None:
            return torch.zeros_like(var), var
        return ((h * self._cast(s)) @ self.W.T) * var, var

    def mean_visibles(self, h: Tensor, s: Optional[Tensor] = None) -> Tensor:
        r""":math:`E[v \mid s, h]`, ``(..., D)``."""
        return self.visible_moments(h, s)[0]

    def sample_visibles(self, h: Tensor, s: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Draw :math:`v \sim p(v \mid s, h)` (``s = None``: slabs at 0), ``(..., D)``, no gradient."""
        with torch.no_grad():
            mean, var = self.visible_moments(h, s)
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            return mean + eps * var.sqrt()

    # ------------------------------------------------------------------ energies
    def energy(self, v: Tensor, s: Tensor, h: Tensor) -> Tensor:
        r""":math:`E(v, s, h)` (see the module docstring), broadcast over the batch, ``(...)``."""
        v, s, h = self._cast(v), self._cast(s), self._cast(h)
        quad = 0.5 * (v.pow(2) * (self.visible_precision + h @ self.phi)).sum(-1)
        return quad - (h * s * (v @ self.W)).sum(-1) + 0.5 * (self.slab_precision * (s - self.mu * h).pow(2)).sum(-1) - h @ self.b

    def free_energy(self, v: Tensor) -> Tensor:
        r""":math:`F(v) = \tfrac12 v^\top\Lambda v - \sum_i[\tfrac12\log(2\pi/\alpha_i) + \operatorname{softplus}(\ell_i(v))]`, ``(...)``."""
        v = self._cast(v)
        x, q = self.projections(v)
        const = (0.5 * (_LOG_2PI - self.slab_precision.log())).sum()
        # softplus: overflow-safe log(1 + e^l)
        return 0.5 * (v.pow(2) * self.visible_precision).sum(-1) - const - F.softplus(self.spike_logits_from(x, q)).sum(-1)

    def free_energy_hidden(self, h: Tensor) -> Tensor:
        r""":math:`F(h) = -\log\iint e^{-E}\,dv\,ds`, closed form with one ``D x D`` Cholesky per row, ``(..., N) -> (...)``."""
        h = self._cast(h)
        P = self.conditional_precision(h)
        L = torch.linalg.cholesky(P)
        r = (h * self.mu) @ self.W.T  # (..., D)
        y = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
        logdet = 2.0 * torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)
        const = (0.5 * (_LOG_2PI - self.slab_precision.log())).sum() + 0.5 * self.n_visible * _LOG_2PI
        return -(h @ self.b + const - 0.5 * logdet + 0.5 * (r * y).sum(-1))

    # ------------------------------------------------------------------ sampling and training helpers
    def gibbs_vhv(
        self, v: Tensor, k: int = 1, generator: Optional[torch.Generator] = None, hidden_logits: Optional[Tensor] = None
    ) -> GibbsState:
        r"""``k`` sweeps :math:`v \to h \sim p(h \mid v) \to s \sim p(s \mid v, h) \to v \sim p(v \mid s, h)` (no gradient);
        ``hidden_logits`` is accepted for the shared RBM interface and ignored."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with torch.no_grad():
            v = self._cast(v)
            for _ in range(k):
                x, q = self.projections(v)
                h_mean = torch.sigmoid(self.spike_logits_from(x, q))
                h = torch.bernoulli(h_mean, generator=generator)
                s = self.sample_slabs_from(x, h, 1.0, generator)
                v_mean, var = self.visible_moments(h, s)
                v = v_mean + torch.randn(v_mean.shape, generator=generator, dtype=v.dtype, device=v.device) * var.sqrt()
        return GibbsState(v=v, v_mean=v_mean, h=h, h_mean=h_mean)

    def cd_loss(self, v_data: Tensor, v_model: Tensor, data_logits: Optional[Tensor] = None) -> Tensor:
        r"""CD/PCD surrogate :math:`\overline{F(v_{data})} - \overline{F(\operatorname{sg}[v_{model}])}`
        (``data_logits``, the spike log-odds of ``v_data`` with their graph, saves recomputing them)."""
        if data_logits is None:
            data_term = self.free_energy(v_data)
        else:
            v = self._cast(v_data)
            const = (0.5 * (_LOG_2PI - self.slab_precision.log())).sum()
            data_term = 0.5 * (v.pow(2) * self.visible_precision).sum(-1) - const - F.softplus(data_logits).sum(-1)
        return data_term.mean() - self.free_energy(v_model.detach()).mean()

    def reconstruct(self, v: Tensor) -> Tensor:
        r"""Mean-field up-down pass: :math:`h = p(h \mid v)`, :math:`s = E[s \mid v, h = 1]`, then :math:`E[v \mid s, h]`."""
        x, q = self.projections(v)
        h = torch.sigmoid(self.spike_logits_from(x, q))
        return self.mean_visibles(h, self.slab_mean(x, torch.ones_like(h)))

    def reconstruction_error(self, v: Tensor, hidden_probs: Optional[Tensor] = None) -> Tensor:
        """Mean squared error of :meth:`reconstruct` (a monitor, not a likelihood); ``hidden_probs`` is
        accepted for the shared interface and ignored."""
        v = self._cast(v)
        return (v - self.reconstruct(v)).pow(2).mean()

    def forward(self, v: Tensor) -> Tensor:
        """:math:`F(v)`."""
        return self.free_energy(v)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, min_precision={self.min_precision}"

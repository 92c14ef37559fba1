r"""AIS paths of the restricted Boltzmann machines of :mod:`lightning_gm.nn.rbm`: the Salakhutdinov & Murray (2008)
path to a Bernoulli RBM and its Gaussian-Bernoulli counterpart, for :func:`~lightning_gm.estimators.ais.ais_log_partition`.

Both anneal the target's energy by :math:`\beta` from a model of independent visible units (the data's base rate,
or a Gaussian) with the hidden units summed out. The Bernoulli path takes one fused float32 step per
intermediate distribution (:meth:`RBMAnnealingPath.advance`) with float64 log-weights.

References:
    Neal (2001), Annealed importance sampling; Salakhutdinov & Murray (2008), On the quantitative analysis of deep
    belief networks, ICML; Cho, Ilin & Raiko (2011) (the Gaussian-Bernoulli energy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gm.estimators.ais import FLOAT32_INCREMENT_LIMIT, AnnealingPath, softplus_difference
from lightning_gm.estimators.partition import base_parameter, frozen_copy
from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM, RBMBase, bernoulli

__all__ = ["RBMAnnealingPath", "GaussianRBMAnnealingPath", "rbm_log_likelihood"]


class RBMAnnealingPath(AnnealingPath[Tensor]):
    r"""The Salakhutdinov & Murray (2008) path from a base-rate model to a Bernoulli RBM.

    The base model :math:`A` is an RBM with visible biases :math:`b_A` and zero weights and hidden
    biases, so :math:`Z_A = 2^H \prod_i (1 + e^{b_{A,i}})` (the :math:`2^H` is what the softplus term
    below equals at :math:`\beta = 0`; Salakhutdinov's code adds :math:`H \log 2` to both
    :math:`\log Z_A` and the initial log-weight). The intermediate distributions are the marginals of

    .. math::

        p_\beta(v, h) \propto \exp\big((1-\beta)\, b_A^\top v + \beta\,(b^\top v + c^\top h + v^\top W h)\big),

    i.e. the target's energy scaled by :math:`\beta`; summing out :math:`h`,

    .. math::

        \log f_\beta(v) = (1-\beta)\, b_A^\top v + \beta\, b^\top v
                          + \sum_j \operatorname{softplus}\big(\beta\,(c_j + v^\top W_{:j})\big).

    Note :math:`\beta` multiplies the hidden pre-activation *inside* the softplus: this is what the
    Gibbs transition below leaves invariant (and what ``RBM_AIS.m`` computes as
    ``log(1+exp(bb*Wh))``); the geometric mean :math:`p_A^{1-\beta} p_B^{\beta}` of the *marginals*
    (:math:`\beta` outside the softplus) would be a different path with no such simple transition.

    Transition at :math:`\beta`: :math:`h_j \sim \sigma(\beta x_j)` with :math:`x = c + W^\top v`, then
    :math:`v_i \sim \sigma((1-\beta) b_{A,i} + \beta(b_i + W_{i:} h))`.

    **One step** (:meth:`advance`, from :math:`\beta'` to :math:`\beta`) costs the two matrix products of a Gibbs
    sweep over all chains at once, :math:`[x, (b - b_A)^\top v] = v^\top [W, b - b_A]` and :math:`W h`, in float32
    (``dtype``), and one sigmoid per unit: the increment

    .. math::

        \log\frac{f_\beta(v)}{f_{\beta'}(v)} = (\beta - \beta')(b - b_A)^\top v
            + \sum_j \big[\operatorname{softplus}(\beta x_j) - \operatorname{softplus}(\beta' x_j)\big]

    is computed by :func:`softplus_difference` from :math:`\sigma(\beta x)`, the probabilities the transition
    samples :math:`h` with, and accumulated in float64. :meth:`log_unnormalized` (the full :math:`\log f_\beta`,
    used to start reverse annealing) runs in float64. All on a detached copy of the parameters.

    Args:
        rbm: the target :class:`~lightning_gm.nn.rbm.BernoulliRBM`.
        base_visible_bias: :math:`b_A`, ``(n_visible,)``; default zeros (uniform base). The data's
            log-odds (:func:`base_rate_log_odds`) give a much better base for trained models.
        dtype: of the Gibbs chains and their products (float32; float64 for a reference run).
        sweeps: block-Gibbs sweeps per intermediate distribution (each leaves :math:`p_\beta` invariant, so the
            estimator stays unbiased; more sweeps mix more per step at two products each).
    """

    def __init__(self, rbm: BernoulliRBM, base_visible_bias: Tensor | None = None,
                 dtype: torch.dtype = torch.float32, sweeps: int = 1) -> None:
        if sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {sweeps}")
        self.sweeps = int(sweeps)
        if not isinstance(rbm, BernoulliRBM):
            raise TypeError(f"RBMAnnealingPath needs a BernoulliRBM, got {type(rbm).__name__}")
        m = frozen_copy(rbm)
        self.W, self.b, self.c = m.W, m.b, m.c
        self.b_base = base_parameter(base_visible_bias, tuple(self.b.shape), "base_visible_bias", self.b.device)
        self.dtype = dtype
        # the Gibbs copies: [W, b - b_A] gives the hidden inputs and the linear term in one product
        self._Wx = torch.cat([self.W, (self.b - self.b_base).unsqueeze(1)], 1).to(dtype).contiguous()
        self._WT = self.W.T.to(dtype).contiguous()
        self._W = self.W.to(dtype).contiguous()
        self._c, self._b, self._b_base = self.c.to(dtype), self.b.to(dtype), self.b_base.to(dtype)
        self._x_max = float((self.W.abs().sum(0) + self.c.abs()).max())  # bound on |x_j| for binary v

    def log_z_base(self) -> float:
        r""":math:`\log Z_A = \sum_i \operatorname{softplus}(b_{A,i}) + H \log 2` (independent units)."""
        return float(F.softplus(self.b_base).sum()) + self.W.shape[1] * math.log(2.0)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, n_visible)`` samples of the base-rate model (in ``dtype``)."""
        probs = torch.sigmoid(self._b_base).expand(n, -1)
        return bernoulli(probs, generator)

    def log_unnormalized(self, state: Tensor, beta: float) -> Tensor:
        v = state.to(self.W.dtype)
        # softplus = overflow-safe log(1 + exp(.)).
        return (
            (1.0 - beta) * (v @ self.b_base)
            + beta * (v @ self.b)
            + F.softplus(beta * (v @ self.W + self.c)).sum(-1)
        )

    def _inputs(self, v: Tensor) -> tuple[Tensor, Tensor]:
        xa = v.to(self.dtype) @ self._Wx
        h = self._c.shape[0]
        return xa[:, :h].add_(self._c), xa[:, h]

    def advance(self, state: Tensor, beta_from: float, beta_to: float, generator: torch.Generator | None = None,
                transition: bool = True) -> tuple[Tensor, Tensor]:
        x, linear = self._inputs(state)
        step = beta_to - beta_from
        prob = torch.sigmoid(beta_to * x)
        if abs(step) * self._x_max < FLOAT32_INCREMENT_LIMIT:
            hidden = softplus_difference(prob, step * x).sum(-1, dtype=torch.float64)
        else:  # a coarse schedule: expm1 could overflow, take the float64 softplus difference
            x64 = x.double()
            hidden = (F.softplus(beta_to * x64) - F.softplus(beta_from * x64)).sum(-1)
        increment = hidden.add_(linear.double(), alpha=step)
        if not transition:
            return increment, state
        visible_bias = torch.lerp(self._b_base, self._b, beta_to)
        for sweep in range(self.sweeps):
            if sweep:
                prob = torch.addmm(self._c, v, self._W).mul_(beta_to).sigmoid_()
            h = bernoulli(prob, generator)
            v = bernoulli(torch.addmm(visible_bias, h, self._WT, alpha=beta_to).sigmoid_(), generator)
        return increment, v

    def log_ratio(self, state: Tensor, beta_from: float, beta_to: float) -> Tensor:
        return self.advance(state, beta_from, beta_to, transition=False)[0]

    def transition(self, state: Tensor, beta: float, generator: torch.Generator | None = None) -> Tensor:
        return self.advance(state, beta, beta, generator)[1]


class GaussianRBMAnnealingPath(AnnealingPath[Tensor]):
    r"""AIS path from a base Gaussian to a Gaussian-Bernoulli RBM (:class:`~lightning_gm.nn.rbm.GaussianBernoulliRBM`).

    With the target's :math:`U(v) = \sum_i (v_i - b_i)^2 / 2\sigma_i^2`, the base
    :math:`U_A(v) = \sum_i (v_i - a_i)^2 / 2\sigma_i^2` (same :math:`\sigma`, mean :math:`a`) and
    :math:`x(v) = c + W^\top (v / \sigma^2)`, the intermediate distributions are

    .. math::

        \log f_\beta(v) = -(1-\beta)\, U_A(v) - \beta\, U(v)
                          + \sum_j \operatorname{softplus}\big(\beta\, x_j(v)\big),

    the marginals of :math:`p_\beta(v, h) \propto e^{-(1-\beta) U_A(v) - \beta U(v) + \beta\, h^\top x(v)}`.
    :math:`\log Z_0 = \sum_i \tfrac12\log(2\pi\sigma_i^2) + H\log 2`. Completing the square, the Gibbs
    transition is :math:`h_j \sim \sigma(\beta x_j(v))`, then
    :math:`v \sim \mathcal N\big((1-\beta) a + \beta (b + W h),\ \operatorname{diag}\sigma^2\big)`.
    Float64 on a detached copy of the parameters.

    Args:
        rbm: the target Gaussian-Bernoulli RBM.
        base_mean: :math:`a`, ``(n_visible,)``; default the target's visible bias ``b``.

    References:
        Neal (2001); Salakhutdinov & Murray (2008); Cho, Ilin & Raiko (2011) (the energy).
    """

    def __init__(self, rbm: GaussianBernoulliRBM, base_mean: Tensor | None = None) -> None:
        if not isinstance(rbm, GaussianBernoulliRBM):
            raise TypeError(f"GaussianRBMAnnealingPath needs a GaussianBernoulliRBM, got {type(rbm).__name__}")
        m = frozen_copy(rbm)
        self.W, self.b, self.c, self.log_sigma = m.W, m.b, m.c, m.log_sigma
        self.inv_var = torch.exp(-2.0 * self.log_sigma)
        self.a = base_parameter(base_mean, tuple(self.b.shape), "base_mean", self.b.device, default=self.b)

    def log_z_base(self) -> float:
        return float((0.5 * math.log(2.0 * math.pi) + self.log_sigma).sum()) + self.W.shape[1] * math.log(2.0)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn((n, self.a.shape[0]), generator=generator, dtype=self.a.dtype, device=self.a.device)
        return self.a + eps * torch.exp(self.log_sigma)

    def _quadratics(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return (0.5 * (v - self.a).pow(2) * self.inv_var).sum(-1), (0.5 * (v - self.b).pow(2) * self.inv_var).sum(-1)

    def _hidden_input(self, v: Tensor) -> Tensor:
        return (v * self.inv_var) @ self.W + self.c

    def log_unnormalized(self, state: Tensor, beta: float) -> Tensor:
        v = state.to(self.W.dtype)
        u_a, u = self._quadratics(v)
        return -(1.0 - beta) * u_a - beta * u + F.softplus(beta * self._hidden_input(v)).sum(-1)

    def log_ratio(self, state: Tensor, beta_from: float, beta_to: float) -> Tensor:
        v = state.to(self.W.dtype)
        u_a, u = self._quadratics(v)
        x = self._hidden_input(v)
        return (beta_to - beta_from) * (u_a - u) + (F.softplus(beta_to * x) - F.softplus(beta_from * x)).sum(-1)

    def transition(self, state: Tensor, beta: float, generator: torch.Generator | None = None) -> Tensor:
        v = state.to(self.W.dtype)
        h = bernoulli(torch.sigmoid(beta * self._hidden_input(v)), generator)
        mean = (1.0 - beta) * self.a + beta * (self.b + h @ self.W.T)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + eps * torch.exp(self.log_sigma)


def rbm_log_likelihood(rbm: RBMBase, v: Tensor, log_z: float | Tensor) -> Tensor:
    r"""Per-example log-likelihood :math:`\log p(v) = -F(v) - \log Z`.

    Args:
        rbm: any RBM of :mod:`lightning_gm.nn.rbm`.
        v: ``(N, n_visible)``.
        log_z: exact (:func:`~lightning_gm.estimators.partition.log_partition_enumerate`) or estimated
            (:func:`ais_log_partition`) log-partition function.

    Returns:
        ``(N,)`` in the model dtype (differentiable in the parameters through :math:`F`).
    """
    return -rbm.free_energy(v) - log_z

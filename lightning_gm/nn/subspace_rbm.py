r"""The subspace restricted Boltzmann machine (Tomczak & Gonczarek 2017) in plain torch.

Binary visibles :math:`x \in \{0,1\}^D`, binary gate units :math:`h \in \{0,1\}^M` and binary subspace
units :math:`S \in \{0,1\}^{M \times K}` (``K`` per gate):

.. math::

    E(x, h, S) = -\sum_{ijk} W_{ijk}\, x_i h_j S_{jk} - b^\top x - c^\top h - \sum_{jk} A_{jk}\, h_j S_{jk}.

With :math:`a_{jk}(x) = A_{jk} + \sum_i W_{ijk} x_i`, summing out one gate and its subspace,
:math:`\sum_{h_j, S_{j:}} e^{h_j (c_j + \sum_k S_{jk} a_{jk})} = 2^K + e^{c_j} \prod_k (1 + e^{a_{jk}})`, so

.. math::

    p(x) &\propto e^{b^\top x} \prod_j \Big[2^K + e^{c_j}\prod_k \big(1 + e^{a_{jk}(x)}\big)\Big], \\
    F(x) &= -b^\top x - \sum_j \operatorname{logaddexp}\Big(K\log 2,\ c_j + \sum_k \operatorname{softplus}(a_{jk}(x))\Big), \\
    p(h_j = 1 \mid x) &= \sigma\Big(c_j + \sum_k \operatorname{softplus}(a_{jk}(x)) - K \log 2\Big), \\
    p(S_{jk} = 1 \mid x, h_j) &= \sigma\big(h_j\, a_{jk}(x)\big) \quad (\tfrac12 \text{ when the gate is off}), \\
    p(x_i = 1 \mid h, S) &= \sigma\Big(b_i + \sum_{jk} W_{ijk}\, h_j S_{jk}\Big).

Every quantity takes an inverse temperature ``beta`` that multiplies the whole energy except the visible
bias (the AIS path of :class:`~lightning_gm.estimators.rbm_variants.SubspaceRBMAnnealingPath`); ``beta = 1``
is the model. Block Gibbs sampling draws ``(h, S)`` jointly given ``x`` (``h`` with ``S`` summed out, then
``S | x, h``) and then ``x | h, S``.

Only the products :math:`z_{jk} = h_j S_{jk}` reach the visibles, so the visible conditional takes ``z``
``(..., M, K)``.

References:
    Tomczak & Gonczarek (2017), Learning invariant features using subspace restricted Boltzmann machine,
    Neural Processing Letters 45; Hinton (2002); Salakhutdinov & Murray (2008).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.rbm_base import CoupledUnits

__all__ = ["SubspaceRBMNet", "SubspaceGibbsState"]


class SubspaceGibbsState(NamedTuple):
    """Result of :meth:`SubspaceRBMNet.gibbs_vhv`.

    Attributes:
        v: final visible sample ``(B, D)``.
        v_mean: :math:`p(x = 1 \\mid h, S)` it was drawn with ``(B, D)``.
        h: last gate sample ``(B, M)``.
        h_mean: :math:`p(h = 1 \\mid x_{k-1})` ``(B, M)``.
        z: last :math:`h_j S_{jk}` sample ``(B, M, K)``.
    """

    v: Tensor
    v_mean: Tensor
    h: Tensor
    h_mean: Tensor
    z: Tensor


class SubspaceRBMNet(CoupledUnits):
    r"""Subspace RBM maths (see the module docstring for the energy and conditionals).

    Parameters: ``W`` ``(D, M, K)``, ``b`` ``(D,)``, ``c`` ``(M,)``, ``A`` ``(M, K)``.

    Args:
        n_visible: ``D``.
        n_gates: ``M`` gate (hidden) units.
        subspace_size: ``K`` subspace units per gate.
        **kwargs: ``weight_std`` (of the initial ``W``; biases start at 0), ``dtype``, ``device``
            (:class:`~lightning_gm.nn.rbm_base.CoupledUnits`).

    References:
        Tomczak & Gonczarek (2017).
    """

    def __init__(
        self,
        n_visible: int,
        n_gates: int,
        subspace_size: int,
        **kwargs: Any,
    ) -> None:
        super().__init__({"n_visible": n_visible, "n_gates": n_gates, "subspace_size": subspace_size}, **kwargs)
        self.b = nn.Parameter(self._filled(self.n_visible))
        self.c = nn.Parameter(self._filled(self.n_gates))
        self.A = nn.Parameter(self._filled(self.n_gates, self.subspace_size))

    @property
    def n_hidden(self) -> int:
        """Gate units ``M`` (what the RBM machinery calls the hidden layer)."""
        return self.n_gates

    # ------------------------------------------------------------------ pre-activations
    def subspace_logits(self, x: Tensor) -> Tensor:
        r""":math:`a_{jk}(x) = A_{jk} + \sum_i W_{ijk} x_i`: ``(..., D) -> (..., M, K)``."""
        x = self._cast(x)
        return (x @ self.W.reshape(self.n_visible, -1)).reshape(*x.shape[:-1], self.n_gates, self.subspace_size) + self.A

    def _gate_log_terms(self, a: Tensor, beta: float) -> Tensor:
        # log of e^{beta c_j} prod_k (1 + e^{beta a_jk}): the h_j = 1 term (softplus = overflow-safe log1p(exp)).
        return beta * self.c + F.softplus(beta * a).sum(-1)

    def hidden_logits(self, x: Tensor, beta: float = 1.0) -> Tensor:
        r"""Gate log-odds with the subspace summed out:
        :math:`\beta c_j + \sum_k \operatorname{softplus}(\beta a_{jk}) - K\log 2`, ``(..., D) -> (..., M)``."""
        return self._gate_log_terms(self.subspace_logits(x), beta) - self.subspace_size * math.log(2.0)

    def mean_hiddens(self, x: Tensor, beta: float = 1.0) -> Tensor:
        r""":math:`p(h_j = 1 \mid x)`, ``(..., M)``."""
        return torch.sigmoid(self.hidden_logits(x, beta))

    # ------------------------------------------------------------------ energies
    def energy(self, x: Tensor, h: Tensor, S: Tensor) -> Tensor:
        r""":math:`E(x, h, S)` for ``x (..., D)``, ``h (..., M)``, ``S (..., M, K)`` (broadcast), ``(...)``."""
        x, h, S = self._cast(x), self._cast(h), self._cast(S)
        z = h.unsqueeze(-1) * S
        a = self.subspace_logits(x)
        return -(z * a).sum((-1, -2)) - x @ self.b - h @ self.c

    def free_energy(self, x: Tensor, beta: float = 1.0) -> Tensor:
        r""":math:`F_\beta(x) = -b^\top x - \sum_j \operatorname{logaddexp}(K\log 2, \beta c_j + \sum_k
        \operatorname{softplus}(\beta a_{jk}))`, ``(..., D) -> (...)``."""
        x = self._cast(x)
        g = self._gate_log_terms(self.subspace_logits(x), beta)
        # logaddexp keeps 2^K + e^{g} finite for large g
        return -(x @ self.b) - torch.logaddexp(torch.full_like(g, self.subspace_size * math.log(2.0)), g).sum(-1)

    def free_energy_hidden(self, h: Tensor, S: Tensor) -> Tensor:
        r""":math:`F(h, S) = -c^\top h - \sum_{jk} A_{jk} z_{jk} - \sum_i \operatorname{softplus}(b_i + \sum_{jk} W_{ijk} z_{jk})`
        with :math:`z = h \odot S`; ``(..., M)``, ``(..., M, K)`` -> ``(...)``."""
        h, S = self._cast(h), self._cast(S)
        z = h.unsqueeze(-1) * S
        return -(h @ self.c) - (z * self.A).sum((-1, -2)) - F.softplus(self.visible_logits(z)).sum(-1)

    # ------------------------------------------------------------------ conditionals and sampling
    def visible_logits(self, z: Tensor) -> Tensor:
        r""":math:`b_i + \sum_{jk} W_{ijk} z_{jk}` for ``z = h * S`` ``(..., M, K)`` -> ``(..., D)``."""
        z = self._cast(z)
        return z.reshape(*z.shape[:-2], -1) @ self.W.reshape(self.n_visible, -1).T + self.b

    def mean_visibles(self, z: Tensor) -> Tensor:
        r""":math:`p(x_i = 1 \mid h, S)`, ``(..., M, K) -> (..., D)``."""
        return torch.sigmoid(self.visible_logits(z))

    def sample_visibles(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x | h, S`` (binary, no gradient) from ``z = h * S`` ``(..., M, K)``."""
        with torch.no_grad():
            return torch.bernoulli(self.mean_visibles(z), generator=generator)

    def zero_hidden(self, n: int) -> Tensor:
        """``z = 0`` for ``n`` chains, ``(n, M, K)`` (the visible marginals with every gate off)."""
        return torch.zeros(n, self.n_gates, self.subspace_size, dtype=self.W.dtype, device=self.W.device)

    def sample_hiddens(self, x: Tensor, generator: torch.Generator | None = None, beta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        r"""Draw ``(h, S) ~ p(h, S | x)`` exactly: ``h`` from its marginal, then ``S | x, h``.

        Returns:
            ``(h, S, h_mean)`` with shapes ``(..., M)``, ``(..., M, K)``, ``(..., M)``.
        """
        with torch.no_grad():
            a = self.subspace_logits(x)
            h_mean = torch.sigmoid(self._gate_log_terms(a, beta) - self.subspace_size * math.log(2.0))
            h = torch.bernoulli(h_mean, generator=generator)
            S = torch.bernoulli(torch.sigmoid(beta * h.unsqueeze(-1) * a), generator=generator)
        return h, S, h_mean

    def mean_z(self, x: Tensor) -> Tensor:
        r""":math:`E[h_j S_{jk} \mid x] = p(h_j = 1 \mid x)\, \sigma(a_{jk})`, ``(..., M, K)`` (mean-field up pass)."""
        a = self.subspace_logits(x)
        h = torch.sigmoid(self._gate_log_terms(a, 1.0) - self.subspace_size * math.log(2.0))
        return h.unsqueeze(-1) * torch.sigmoid(a)

    def gibbs_vhv(
        self, v: Tensor, k: int = 1, generator: torch.Generator | None = None, hidden_logits: Tensor | None = None
    ) -> SubspaceGibbsState:
        """``k`` block-Gibbs sweeps ``x -> (h, S) -> x`` (no gradient). ``hidden_logits`` is accepted for the
        shared RBM machinery's interface and ignored (the subspace units need :math:`a(x)` anyway)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with torch.no_grad():
            v = self._cast(v)
            for _ in range(k):
                h, S, h_mean = self.sample_hiddens(v, generator)
                z = h.unsqueeze(-1) * S
                v_mean = self.mean_visibles(z)
                v = torch.bernoulli(v_mean, generator=generator)
        return SubspaceGibbsState(v=v, v_mean=v_mean, h=h, h_mean=h_mean, z=z)

    # ------------------------------------------------------------------ training helpers
    def cd_loss(self, v_data: Tensor, v_model: Tensor, data_logits: Tensor | None = None) -> Tensor:
        r"""CD/PCD surrogate :math:`\overline{F(x_{data})} - \overline{F(\operatorname{sg}[x_{model}])}`.

        ``data_logits`` (:meth:`hidden_logits` of ``v_data`` with their graph) saves the data term's matrix
        product: :math:`F(x) = -b^\top x - MK\log 2 - \sum_j \operatorname{softplus}(\text{logit}_j)`."""
        if data_logits is None:
            data_term = self.free_energy(v_data)
        else:
            v = self._cast(v_data)
            data_term = -(v @ self.b) - self.n_gates * self.subspace_size * math.log(2.0) - F.softplus(data_logits).sum(-1)
        return data_term.mean() - self.free_energy(v_model.detach()).mean()

    def reconstruction_error(self, v: Tensor, hidden_probs: Tensor | None = None) -> Tensor:
        """Mean squared error of one mean-field up-down pass (a monitor, not a likelihood); ``hidden_probs``
        is accepted for the shared interface and ignored."""
        v = self._cast(v)
        return (v - self.mean_visibles(self.mean_z(v))).pow(2).mean()

    def pseudo_log_likelihood(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Stochastic pseudo-log-likelihood :math:`D \log\sigma(F(\tilde x) - F(x))` (one flipped bit), ``(N,)``."""
        v = self._cast(v)
        n, d = v.shape
        idx = torch.randint(0, d, (n,), generator=generator, device=v.device)
        rows = torch.arange(n, device=v.device)
        flip = v.clone()
        flip[rows, idx] = 1.0 - flip[rows, idx]
        return d * F.logsigmoid(self.free_energy(flip) - self.free_energy(v))

    def forward(self, x: Tensor) -> Tensor:
        """:math:`F(x)`."""
        return self.free_energy(x)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_gates={self.n_gates}, subspace_size={self.subspace_size}"

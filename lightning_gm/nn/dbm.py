r"""Deep Boltzmann machines with binary units in plain torch: energy, conditionals, mean field, Gibbs.

Layers :math:`x_0 = v, x_1 = h_1, \dots, x_L = h_L` are binary with sizes ``sizes = [D, H_1, ..., H_L]``,
weights :math:`W_l` of shape ``(sizes[l-1], sizes[l])`` between adjacent layers and biases :math:`b_l`:

.. math::

    E(x_0, \dots, x_L) = -\sum_{l=0}^{L} b_l^\top x_l - \sum_{l=1}^{L} x_{l-1}^\top W_l x_l .

Units of one layer are conditionally independent given the two adjacent layers,

.. math::

    p(x_{l,j} = 1 \mid x_{l-1}, x_{l+1}) = \sigma(a_{l,j}), \qquad
    a_l = b_l + W_l^\top x_{l-1} + W_{l+1} x_{l+1},

so odd layers are independent of each other given the even ones (and vice versa): Gibbs sampling
alternates odd and even layers, and any set ``S`` of pairwise non-adjacent layers can be summed out
analytically:

.. math::

    \log \sum_{x_S} e^{-E(x)} = -E_{\bar S}(x_{\bar S}) + \sum_{l \in S} \sum_j \operatorname{softplus}(a_{l,j}),

where :math:`E_{\bar S}` keeps the bias terms of the kept layers and the weight terms between two kept
layers. A fully factorised :math:`q(h \mid v) = \prod_l \prod_j \mu_{l,j}^{h_{l,j}} (1-\mu_{l,j})^{1-h_{l,j}}`
gives the mean-field lower bound (the energy is linear in each layer, so :math:`E_q[E] = E(v, \mu)`)

.. math::

    \log p(v) \ge -E(v, \mu_1, \dots, \mu_L) + \sum_l \mathcal H(\mu_l) - \log Z,

maximised by the fixed point :math:`\mu_l = \sigma(b_l + W_l^\top \mu_{l-1} + W_{l+1} \mu_{l+1})`.
Updating all odd layers, then all even layers, is block coordinate ascent, so the bound never
decreases. The updates start from a *doubled bottom-up* pass
:math:`\mu_l = \sigma(b_l + 2 W_l^\top \mu_{l-1})` (:math:`l < L`), :math:`\mu_L = \sigma(b_L + W_L^\top \mu_{L-1})`,
which stands in for the missing top-down input (Salakhutdinov & Larochelle 2010).

Shapes: every layer tensor is ``(..., sizes[l])``; per-example results are ``(...)``.

References:
    Salakhutdinov & Hinton (2009), Deep Boltzmann machines, AISTATS;
    Salakhutdinov & Hinton (2012), An efficient learning procedure for deep Boltzmann machines, Neural Computation 24;
    Salakhutdinov & Larochelle (2010), Efficient learning of deep Boltzmann machines, AISTATS;
    Montavon & Mueller (2012), Deep Boltzmann machines and the centering trick.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.rbm import bernoulli

__all__ = ["BinaryDBM", "bernoulli_entropy"]


def bernoulli_entropy(p: Tensor, eps: float = 1e-12) -> Tensor:
    r""":math:`\sum_j \mathcal H(p_j) = -\sum_j [p_j \log p_j + (1-p_j)\log(1-p_j)]` over the last axis.

    ``eps`` clamps the logs so that saturated means (0 or 1) give 0 rather than ``nan``.
    """
    return -(p * torch.log(p.clamp_min(eps)) + (1 - p) * torch.log((1 - p).clamp_min(eps))).sum(-1)


class BinaryDBM(nn.Module):
    r"""A deep Boltzmann machine with binary visible and hidden layers (see the module docstring).

    Args:
        sizes: ``[D, H_1, ..., H_L]``, ``L >= 1``.
        weight_std: standard deviation of the initial weights (biases start at zero).
        centered: centred DBM (Montavon & Mueller 2012): the energy uses :math:`x_l - o_l` in the weight
            terms, :math:`-\sum_l b_l^\top x_l - \sum_l (x_{l-1}-o_{l-1})^\top W_l (x_l - o_l)`, with offsets
            kept as buffers ``offset_l`` (see :meth:`shift_offsets`); otherwise the offsets are unused.

    Attributes:
        weights: ``ParameterList`` of :math:`W_1..W_L`; ``biases``: of :math:`b_0..b_L`.
    """

    def __init__(self, sizes: Sequence[int], weight_std: float = 0.01, centered: bool = False) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be [D, H_1, ..., H_L] with L >= 1 positive sizes, got {sizes}")
        self.sizes = sizes
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(sizes[l - 1], sizes[l]) * weight_std) for l in range(1, len(sizes))]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in sizes])
        self.centered = centered
        for l, s in enumerate(sizes):
            self.register_buffer(f"offset_{l}", torch.zeros(s))

    # ------------------------------------------------------------------ structure
    @property
    def num_layers(self) -> int:
        """Number of hidden layers ``L``."""
        return len(self.sizes) - 1

    def W(self, l: int) -> Tensor:
        """:math:`W_l`, ``(sizes[l-1], sizes[l])``, for ``1 <= l <= L`` (``weights[l - 1]``)."""
        return self.weights[l - 1]

    def offset(self, l: int) -> Tensor:
        """Centring offset :math:`o_l` (zeros unless ``centered``)."""
        return getattr(self, f"offset_{l}")

    def set_offset(self, l: int, value: Tensor) -> None:
        """Set :math:`o_l` in place (only meaningful for a centred DBM)."""
        self.offset(l).copy_(value.detach().to(self.offset(l)))

    @torch.no_grad()
    def shift_offsets(self, new_offsets: Sequence[Tensor]) -> None:
        r"""Move the centring offsets to ``new_offsets`` without changing the distribution.

        With :math:`\delta_l = o'_l - o_l`, :math:`(x_{l-1} - o'_{l-1})^\top W_l (x_l - o'_l)` differs from the old
        term by :math:`-\delta_{l-1}^\top W_l x_l - x_{l-1}^\top W_l \delta_l` + const, which the biases absorb:
        :math:`b_l \mathrel{+}= W_l^\top \delta_{l-1}`, :math:`b_{l-1} \mathrel{+}= W_l \delta_l`.
        """
        deltas = [new_offsets[l].to(self.offset(l)) - self.offset(l) for l in range(self.num_layers + 1)]
        for l in range(1, self.num_layers + 1):
            self.biases[l].add_(deltas[l - 1] @ self.W(l))
            self.biases[l - 1].add_(self.W(l) @ deltas[l])
        for l in range(self.num_layers + 1):
            self.offset(l).add_(deltas[l])

    def _c(self, x: Tensor, l: int) -> Tensor:
        return x - self.offset(l) if self.centered else x

    def _cast(self, x: Tensor) -> Tensor:
        return x.to(self.weights[0].dtype)

    # ------------------------------------------------------------------ energies
    def energy(self, states: Sequence[Tensor]) -> Tensor:
        r""":math:`E(x_0, \dots, x_L)` for layers ``states[l]`` of shape ``(..., sizes[l])`` (broadcast)."""
        e = 0.0
        for l, x in enumerate(states):
            e = e - self._cast(x) @ self.biases[l]
        for l in range(1, len(states)):
            lower, upper = self._c(self._cast(states[l - 1]), l - 1), self._c(self._cast(states[l]), l)
            e = e - ((lower @ self.W(l)) * upper).sum(-1)
        return e  # type: ignore[return-value]

    def layer_input(self, states: Sequence[Optional[Tensor]], l: int) -> Tensor:
        r""":math:`a_l = b_l + W_l^\top x_{l-1} + W_{l+1} x_{l+1}` (minus the centring correction), ``(..., sizes[l])``.

        Only ``states[l-1]`` and ``states[l+1]`` are read (``states[l]`` may be ``None``).
        """
        a = self.biases[l]
        if l > 0:
            a = a + self._c(self._cast(states[l - 1]), l - 1) @ self.W(l)  # type: ignore[arg-type]
        if l < self.num_layers:
            a = a + self._c(self._cast(states[l + 1]), l + 1) @ self.W(l + 1).T  # type: ignore[arg-type]
        return a

    def log_marginal(self, states: Sequence[Optional[Tensor]], summed: Sequence[int]) -> Tensor:
        r"""Unnormalised log-marginal of the kept layers with the layers in ``summed`` summed out.

        .. math::

            \log \sum_{x_S} e^{-E(x)} = \sum_{l \notin S} b_l^\top x_l
            + \sum_{l, l-1 \notin S} x_{l-1}^\top W_l x_l + \sum_{l \in S}\sum_j \operatorname{softplus}(a_{l,j}).

        Args:
            states: a tensor per layer; entries of summed layers are ignored (may be ``None``).
            summed: pairwise non-adjacent layer indices.

        Returns:
            ``(...)`` per configuration.
        """
        s = set(summed)
        if any(l in s and l + 1 in s for l in range(self.num_layers)):
            raise ValueError(f"summed layers must be pairwise non-adjacent, got {sorted(s)}")
        out = 0.0
        for l in range(self.num_layers + 1):
            if l in s:
                a = self.layer_input(states, l)
                out = out + F.softplus(a).sum(-1)  # softplus = log(1 + e^a)
                if self.centered:  # sum_x e^{b'x + u'(x - o)} = e^{-u'o} prod(1 + e^{b+u}), u = a - b
                    out = out - (a - self.biases[l]) @ self.offset(l)
            else:
                out = out + self._cast(states[l]) @ self.biases[l]  # type: ignore[arg-type]
                if l > 0 and (l - 1) not in s:
                    lower = self._c(self._cast(states[l - 1]), l - 1)  # type: ignore[arg-type]
                    out = out + ((lower @ self.W(l)) * self._c(self._cast(states[l]), l)).sum(-1)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ sampling
    def sample_layer(self, states: Sequence[Optional[Tensor]], l: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""Draw :math:`x_l \sim p(x_l \mid x_{l-1}, x_{l+1})`; returns ``(sample, probabilities)``."""
        p = torch.sigmoid(self.layer_input(states, l))
        return bernoulli(p, generator), p

    def gibbs_sweep(self, states: list[Tensor], generator: torch.Generator | None = None,
                    clamp_visible: bool = False) -> list[Tensor]:
        r"""One sweep: all odd layers given the even ones, then all even layers given the odd ones.

        With ``clamp_visible`` layer 0 is left as is (sampling the posterior given ``v``). Returns a new list.
        """
        states = list(states)
        for parity in (1, 0):
            for l in range(parity, self.num_layers + 1, 2):
                if l == 0 and clamp_visible:
                    continue
                states[l] = self.sample_layer(states, l, generator)[0]
        return states

    # ------------------------------------------------------------------ mean field
    def mean_field_init(self, v: Tensor) -> list[Tensor]:
        r"""Doubled bottom-up pass :math:`\mu_l = \sigma(b_l + 2W_l^\top\mu_{l-1})`, top :math:`\sigma(b_L + W_L^\top\mu_{L-1})`.

        Returns ``[v, mu_1, ..., mu_L]``.
        """
        mus = [self._cast(v)]
        for l in range(1, self.num_layers + 1):
            factor = 2.0 if l < self.num_layers else 1.0
            mus.append(torch.sigmoid(self.biases[l] + factor * (self._c(mus[-1], l - 1) @ self.W(l))))
        return mus

    def mean_field(self, v: Tensor, iterations: int = 10, tol: float = 1e-6,
                   init: Optional[Sequence[Tensor]] = None) -> tuple[list[Tensor], int]:
        r"""Fixed-point mean-field updates, odd layers then even hidden layers, ``v`` clamped.

        Args:
            v: ``(B, D)`` data.
            iterations: maximum number of (odd, even) update rounds.
            tol: stop early once the largest change of any :math:`\mu` in a round is below ``tol``.
            init: starting ``[v, mu_1, ..., mu_L]`` (default :meth:`mean_field_init`).

        Returns:
            ``([v, mu_1, ..., mu_L], rounds done)``.
        """
        mus = list(init) if init is not None else self.mean_field_init(v)
        mus[0] = self._cast(v)
        done = 0
        for _ in range(iterations):
            change = torch.zeros((), dtype=mus[0].dtype, device=mus[0].device)
            for first in (1, 2):  # odd hidden layers, then even hidden layers
                for l in range(first, self.num_layers + 1, 2):
                    new = torch.sigmoid(self.layer_input(mus, l))
                    change = torch.maximum(change, (new - mus[l]).abs().max())
                    mus[l] = new
            done += 1
            if float(change.detach()) < tol:
                break
        return mus, done

    def mean_field_bound(self, mus: Sequence[Tensor]) -> Tensor:
        r"""Unnormalised mean-field bound :math:`-E(v, \mu) + \sum_l \mathcal H(\mu_l)` (add :math:`-\log Z`), ``(B,)``."""
        return -self.energy(mus) + sum(bernoulli_entropy(m) for m in mus[1:])

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, centered={self.centered}"

r"""Log-partition functions of binary deep Boltzmann machines: exact enumeration and AIS.

Layers that are pairwise non-adjacent can be summed out analytically
(:meth:`~lightning_gm.nn.dbm.BinaryDBM.log_marginal`). **Exact** :math:`\log Z` enumerates the
smaller of the odd-layer or even-layer sets and sums the other out:

.. math::

    \log Z = \log \sum_{x_{\text{odd}}} \exp\Big(\sum_{l \text{ odd}} b_l^\top x_l
             + \sum_{l \text{ even}} \sum_j \operatorname{softplus}(a_{l,j})\Big).

**AIS** (Salakhutdinov & Hinton 2009, whose 2-layer code sums out :math:`v` and :math:`h_2` and keeps
:math:`h_1`): by default the chains carry the *interior* layers :math:`h_1, \dots, h_{L-1}` (``L >= 2``; for
``L = 1`` the hidden layer) and the visible and top layers are summed out analytically; any set :math:`S` of
pairwise non-adjacent layers can be summed instead (``summed``; the even/odd split keeps :math:`v`, which
reverse annealing from data needs). The base model has zero weights, zero hidden biases and visible biases
:math:`b_A` (the data's log-odds), and the intermediate distributions are
:math:`p_\beta(x) \propto e^{(1-\beta) b_A^\top v - \beta E(x)}`:

.. math::

    \log f_\beta(x_K) = [0 \in K]\,(1-\beta)\, b_A^\top v
      + \beta\Big(\sum_{l \in K} b_l^\top x_l + \sum_{l-1, l \in K} x_{l-1}^\top W_l x_l + C\Big)
      + \sum_{l \in S} \sum_j \operatorname{softplus}\big((1-\beta) b_{A,l,j} + \beta a_{l,j}\big),

with :math:`K` the kept layers, :math:`b_{A,l} = 0` for hidden layers, so
:math:`\log Z_0 = \sum_i \operatorname{softplus}(b_{A,i}) + \log 2 \sum_{l \ge 1} H_l` whichever layers are
kept. A centred DBM (offsets :math:`o_l`) is annealed through its uncentred equivalent: expanding
:math:`(x_{l-1} - o_{l-1})^\top W_l (x_l - o_l)`, the energy is the plain one with biases
:math:`b_l - W_l^\top o_{l-1} - W_{l+1} o_{l+1}` minus the constant :math:`C = \sum_l o_{l-1}^\top W_l o_l`.
The transition samples the summed layers given the kept ones, then Gibbs-updates the odd and then the even
kept layers; it leaves :math:`p_\beta` invariant (and with two blocks, as in both splits above for ``L = 2``,
it is reversible). A step costs the matrix products of one sweep over all chains at once, in float32, with
the increment from the sampling probabilities by :func:`~lightning_gm.estimators.ais.softplus_difference`
accumulated in float64.

References:
    Salakhutdinov & Hinton (2009), Deep Boltzmann machines, AISTATS;
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML;
    Neal (2001), Annealed importance sampling.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gm.estimators.ais import FLOAT32_INCREMENT_LIMIT, AnnealingPath, softplus_difference
from lightning_gm.estimators.reverse import ReverseStart
from lightning_gm.estimators.partition import (
    MAX_ENUMERATION_UNITS,
    base_parameter,
    check_enumerable,
    frozen_copy,
    logsumexp_over_binary,
)
from lightning_gm.nn.dbm import BinaryDBM
from lightning_gm.nn.rbm import bernoulli

__all__ = ["dbm_log_partition_enumerate", "dbm_exact_log_partition", "DBMAnnealingPath", "dbm_reverse_start", "split_layers"]


def split_layers(dbm: BinaryDBM, parity: int) -> tuple[list[int], list[int]]:
    """``(kept, summed)`` layer indices: keep the layers of ``parity`` (0 even, 1 odd), sum out the others."""
    layers = list(range(dbm.num_layers + 1))
    return [l for l in layers if l % 2 == parity], [l for l in layers if l % 2 != parity]


def _log_marginal_flat(dbm: BinaryDBM, x: Tensor, kept: Sequence[int], summed: Sequence[int]) -> Tensor:
    states: list[Optional[Tensor]] = [None] * (dbm.num_layers + 1)
    start = 0
    for l in kept:
        states[l] = x[..., start : start + dbm.sizes[l]]
        start += dbm.sizes[l]
    return dbm.log_marginal(states, summed)


def dbm_log_partition_enumerate(
    dbm: BinaryDBM,
    over: Literal["auto", "odd", "even"] = "auto",
    chunk_size: int = 2**14,
    max_units: int = MAX_ENUMERATION_UNITS,
) -> float:
    r"""Exact :math:`\log Z` of a DBM: enumerate the odd (or even) layers, sum the others out (float64).

    Args:
        dbm: the model.
        over: layers to enumerate; ``"auto"`` picks the set with fewer units.
        chunk_size: configurations per chunk.
        max_units: refuse to enumerate more binary units than this.

    Raises:
        EnumerationTooLargeError: if the enumerated layers have more than ``max_units`` units.
    """
    n_odd = sum(dbm.sizes[1::2])
    n_even = sum(dbm.sizes[0::2])
    if over == "auto":
        over = "odd" if n_odd <= n_even else "even"
    if over not in ("odd", "even"):
        raise ValueError(f"over must be 'auto', 'odd' or 'even', got {over!r}")
    kept, summed = split_layers(dbm, 1 if over == "odd" else 0)
    n = sum(dbm.sizes[l] for l in kept)
    check_enumerable(n, max_units, f"dbm_log_partition_enumerate(over={over!r})")
    model = frozen_copy(dbm)
    with torch.no_grad():
        out = logsumexp_over_binary(n, lambda x: _log_marginal_flat(model, x, kept, summed), chunk_size,
                                    torch.float64, model.weights[0].device)
    return float(out)


class DBMAnnealingPath(AnnealingPath[list]):
    r"""AIS path from a base-rate model to a binary DBM, the ``summed`` layers summed out (module docstring).

    The chain state is a list with one tensor per layer; only the kept layers matter between transitions
    (a summed layer's entry is its latest sample, or ``None``).

    Args:
        dbm: the target DBM (any number of layers; a centred DBM through its uncentred equivalent).
        base_visible_bias: :math:`b_A`, ``(D,)``; default zeros.
        summed: pairwise non-adjacent layers to sum out; default ``[0, L]`` (``[0]`` for ``L = 1``).
        dtype: of the chains and their products (float32; float64 for a reference run).
    """

    def __init__(self, dbm: BinaryDBM, base_visible_bias: Optional[Tensor] = None,
                 summed: Optional[Sequence[int]] = None, dtype: torch.dtype = torch.float32) -> None:
        d = frozen_copy(dbm)
        L = d.num_layers
        self.sizes = list(d.sizes)
        self.summed = sorted(set(summed)) if summed is not None else ([0, L] if L >= 2 else [0])
        if any(l < 0 or l > L for l in self.summed) or any(l + 1 in self.summed for l in self.summed):
            raise ValueError(f"summed must be pairwise non-adjacent layers of 0..{L}, got {list(summed or [])}")
        self.kept = [l for l in range(L + 1) if l not in self.summed]
        device = d.weights[0].device
        self.b_base = base_parameter(base_visible_bias, (self.sizes[0],), "base_visible_bias", device)
        # the uncentred equivalent (float64): biases b'_l and the constant C
        W = [d.W(l) for l in range(1, L + 1)]
        biases = [d.biases[l].clone() for l in range(L + 1)]
        self.const = 0.0
        if d.centered:
            o = [d.offset(l) for l in range(L + 1)]
            for l in range(1, L + 1):
                biases[l] -= o[l - 1] @ W[l - 1]
                biases[l - 1] -= W[l - 1] @ o[l]
                self.const += float(o[l - 1] @ W[l - 1] @ o[l])
        self.W64, self.b64 = W, biases
        self.dtype = dtype
        self._W = [w.to(dtype).contiguous() for w in W]
        self._WT = [w.T.to(dtype).contiguous() for w in W]
        self._b = [b.to(dtype) for b in biases]
        self._base = [self.b_base.to(dtype)] + [torch.zeros_like(b) for b in self._b[1:]]
        # bound on |a_l - base_l| for binary neighbours: the float32 increment is safe while |dbeta| * bound is small
        bound = 0.0
        for l in self.summed:
            total = (self.b64[l] - (self.b_base if l == 0 else 0.0)).abs()
            if l > 0:
                total = total + W[l - 1].abs().sum(0)
            if l < L:
                total = total + W[l].abs().sum(1)
            bound = max(bound, float(total.max()))
        self._a_max = bound

    # ------------------------------------------------------------------ helpers
    def _input(self, state: Sequence[Optional[Tensor]], l: int) -> Tensor:
        """:math:`a_l = b'_l + W_l^\\top x_{l-1} + W_{l+1} x_{l+1}` in the chains' dtype, ``(n, sizes[l])``."""
        a = self._b[l]
        if l > 0:
            a = torch.addmm(a, state[l - 1].to(self.dtype), self._W[l - 1])  # type: ignore[union-attr]
        if l < len(self.sizes) - 1:
            a = torch.addmm(a, state[l + 1].to(self.dtype), self._WT[l])  # type: ignore[union-attr]
        return a

    def _input64(self, state: Sequence[Optional[Tensor]], l: int) -> Tensor:
        a = self.b64[l]
        if l > 0:
            a = a + state[l - 1].to(torch.float64) @ self.W64[l - 1]  # type: ignore[union-attr]
        if l < len(self.sizes) - 1:
            a = a + state[l + 1].to(torch.float64) @ self.W64[l].T  # type: ignore[union-attr]
        return a

    def _kept_linear(self, state: Sequence[Optional[Tensor]], exact: bool = False) -> Tensor:
        """:math:`\\sum_{l \\in K} b_l'^\\top x_l + \\sum_{l-1,l \\in K} x_{l-1}^\\top W_l x_l + C - [0 \\in K] b_A^\\top v`,
        ``(n,)`` float64: the coefficient of :math:`\\beta` in :math:`\\log f_\\beta` outside the softplus terms
        (products in the chains' dtype unless ``exact``)."""
        out: Tensor | float = self.const
        for l in self.kept:
            if exact:
                x, W, b = state[l].to(torch.float64), self.W64, self.b64[l] - (self.b_base if l == 0 else 0.0)  # type: ignore[union-attr]
                out = out + x @ b
                if l - 1 in self.kept:
                    out = out + ((state[l - 1].to(torch.float64) @ W[l - 1]) * x).sum(-1)  # type: ignore[union-attr]
                continue
            x = state[l].to(self.dtype)  # type: ignore[union-attr]
            out = out + (x @ (self._b[l] - self._base[l])).double()
            if l - 1 in self.kept:
                out = out + ((state[l - 1].to(self.dtype) @ self._W[l - 1]) * x).sum(-1, dtype=torch.float64)  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ the path
    def log_z_base(self) -> float:
        return float(F.softplus(self.b_base).sum()) + math.log(2.0) * sum(self.sizes[1:])

    def sample_base(self, n: int, generator: Optional[torch.Generator] = None) -> list:
        dev = self.b_base.device
        state: list = []
        for l, s in enumerate(self.sizes):
            p = torch.sigmoid(self._base[0]).expand(n, -1) if l == 0 else torch.full((n, s), 0.5, dtype=self.dtype, device=dev)
            state.append(bernoulli(p, generator))
        return state

    def log_unnormalized(self, state: list, beta: float) -> Tensor:
        """:math:`\\log f_\\beta` of the kept layers, in float64."""
        out = beta * self._kept_linear(state, exact=True)
        if 0 in self.kept:
            out = out + state[0].to(torch.float64) @ self.b_base
        for l in self.summed:
            a = self._input64(state, l)
            base = self.b_base if l == 0 else 0.0
            out = out + F.softplus(base + beta * (a - base)).sum(-1)
        return out

    def advance(self, state: list, beta_from: float, beta_to: float, generator: Optional[torch.Generator] = None,
                transition: bool = True) -> tuple[Tensor, list]:
        step = beta_to - beta_from
        increment = self._kept_linear(state) * step
        new = list(state)
        fast = abs(step) * self._a_max < FLOAT32_INCREMENT_LIMIT
        for l in self.summed:
            u = self._input(state, l).sub_(self._base[l])  # a_l - base_l: the logit is base_l + beta * u
            prob = torch.sigmoid(torch.add(self._base[l], u, alpha=beta_to))
            if fast:
                increment += softplus_difference(prob, step * u).sum(-1, dtype=torch.float64)
            else:
                u64, base = u.double(), self._base[l].double()
                increment += (F.softplus(base + beta_to * u64) - F.softplus(base + beta_from * u64)).sum(-1)
            if transition:
                new[l] = bernoulli(prob, generator)
        if not transition:
            return increment, state
        for parity in (1, 0):  # the kept layers: odd ones, then even ones
            for l in self.kept:
                if l % 2 == parity:
                    u = self._input(new, l).sub_(self._base[l])
                    new[l] = bernoulli(torch.sigmoid(torch.add(self._base[l], u, alpha=beta_to)), generator)
        return increment, new

    def log_ratio(self, state: list, beta_from: float, beta_to: float) -> Tensor:
        return self.advance(state, beta_from, beta_to, transition=False)[0]

    def transition(self, state: list, beta: float, generator: Optional[torch.Generator] = None) -> list:
        return self.advance(state, beta, beta, generator)[1]


def dbm_reverse_start(dbm: BinaryDBM, base_visible_bias: Optional[Tensor], v: Tensor, means: Sequence[Tensor],
                      chains: int, generator: Optional[torch.Generator] = None) -> ReverseStart:
    r"""RAISE start for a DBM: the path keeps :math:`v` and the even hidden layers (the odd ones summed out); the
    even layers are drawn from the factorial proposal :math:`q(h_l) = \prod_j \mu_{l,j}^{h_{l,j}}(1-\mu_{l,j})^{1-h_{l,j}}`
    of the mean-field ``means`` (Burda et al. 2015 start DBM chains from the variational posterior), so the
    numerator is :math:`\log f_1(v, h_{\text{even}}) - \log q(h_{\text{even}} \mid v)`.

    Args:
        dbm: the model.
        base_visible_bias: the AIS base-rate log-odds.
        v: ``(B, D)`` binary data.
        means: ``[v, mu_1, ..., mu_L]`` mean-field means for ``v``.
        chains: chains per example.
        generator: random generator of the proposal draws.
    """
    L = dbm.num_layers
    path = DBMAnnealingPath(dbm, base_visible_bias, summed=list(range(1, L + 1, 2)))
    b = v.shape[0]
    state: list = [None] * (L + 1)
    state[0] = v.detach().to(path.dtype).repeat(chains, 1)
    log_q = torch.zeros(chains * b, dtype=torch.float64, device=v.device)
    for l in range(2, L + 1, 2):
        mu = means[l].detach().double().clamp(1e-7, 1.0 - 1e-7).repeat(chains, 1)
        h = bernoulli(mu, generator)
        log_q += (h * mu.log() + (1.0 - h) * (-mu).log1p()).sum(-1)
        state[l] = h.to(path.dtype)
    return ReverseStart(path, state, path.log_unnormalized(state, 1.0) - log_q, b)


def dbm_exact_log_partition(dbm: BinaryDBM, max_units: int) -> Optional[float]:
    """The exact :math:`\log Z` of ``dbm`` when the smaller of its odd/even layer sets has at most ``max_units``
    units, else ``None``."""
    if min(sum(dbm.sizes[1::2]), sum(dbm.sizes[0::2])) > max_units:
        return None
    return dbm_log_partition_enumerate(dbm, max_units=max_units)

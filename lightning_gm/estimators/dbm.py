r"""Log-partition functions of binary deep Boltzmann machines: exact enumeration and AIS.

Layers that are pairwise non-adjacent can be summed out analytically
(:meth:`~lightning_gm.nn.dbm.BinaryDBM.log_marginal`). **Exact** :math:`\log Z` enumerates the
smaller of the odd-layer or even-layer sets and sums the other out:

.. math::

    \log Z = \log \sum_{x_{\text{odd}}} \exp\Big(\sum_{l \text{ odd}} b_l^\top x_l
             + \sum_{l \text{ even}} \sum_j \operatorname{softplus}(a_{l,j})\Big).

**AIS** (Salakhutdinov & Hinton 2009, whose 2-layer code sums out :math:`v` and :math:`h_2` and keeps
:math:`h_1`): the chains carry the *interior* layers :math:`h_1, \dots, h_{L-1}` (``L >= 2``; for
``L = 1`` the hidden layer), the visible layer and the top layer are summed out analytically. The
base model has zero weights, zero hidden biases and visible biases :math:`b_A` (the data's log-odds),
and the intermediate distributions are :math:`p_\beta(x) \propto e^{(1-\beta) b_A^\top v - \beta E(x)}`:

.. math::

    \log f_\beta(x_K) = \beta\Big(\sum_{l \in K} b_l^\top x_l + \sum_{l-1, l \in K} x_{l-1}^\top W_l x_l\Big)
      + \sum_{l \in S} \sum_j \operatorname{softplus}\big((1-\beta) b_{A,l,j} + \beta a_{l,j}\big),

with :math:`S = \{0, L\}` summed and :math:`K` kept, :math:`b_{A,l} = 0` for hidden layers, so
:math:`\log Z_0 = \sum_i \operatorname{softplus}(b_{A,i}) + \log 2 \sum_{l \ge 1} H_l`. The transition
samples the summed layers given the kept ones, then Gibbs-updates the odd and then the even kept layers;
it leaves :math:`p_\beta` invariant. Everything runs in float64 on a detached copy.

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

from lightning_gm.estimators.ais import AnnealingPath
from lightning_gm.estimators.partition import MAX_ENUMERATION_UNITS, check_enumerable, frozen_copy, logsumexp_over_binary
from lightning_gm.nn.dbm import BinaryDBM

__all__ = ["dbm_log_partition_enumerate", "DBMAnnealingPath", "split_layers"]


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
    r"""AIS path from a base-rate model to a binary DBM, visible and top layers summed out (module docstring).

    The chain state is a list with one tensor per layer; only the kept (interior) layers matter
    between transitions.

    Args:
        dbm: the target DBM (any number of layers; a centred DBM is handled through its energy).
        base_visible_bias: :math:`b_A`, ``(D,)``; default zeros.
    """

    def __init__(self, dbm: BinaryDBM, base_visible_bias: Optional[Tensor] = None) -> None:
        self.dbm = frozen_copy(dbm)
        L = self.dbm.num_layers
        self.summed = [0, L] if L >= 2 else [0]
        self.kept = [l for l in range(L + 1) if l not in self.summed]
        device = self.dbm.weights[0].device
        if base_visible_bias is None:
            self.b_base = torch.zeros(self.dbm.sizes[0], dtype=torch.float64, device=device)
        else:
            self.b_base = torch.as_tensor(base_visible_bias).detach().to(torch.float64).to(device).reshape(-1)
            if self.b_base.shape[0] != self.dbm.sizes[0]:
                raise ValueError(f"base_visible_bias must have shape ({self.dbm.sizes[0]},), got {tuple(self.b_base.shape)}")

    def _base(self, l: int) -> Tensor | float:
        return self.b_base if l == 0 else 0.0

    def log_z_base(self) -> float:
        return float(F.softplus(self.b_base).sum()) + math.log(2.0) * sum(self.dbm.sizes[1:])

    def sample_base(self, n: int, generator: Optional[torch.Generator] = None) -> list:
        dev = self.b_base.device
        state: list = []
        for l, s in enumerate(self.dbm.sizes):
            p = torch.sigmoid(self.b_base).expand(n, -1) if l == 0 else torch.full((n, s), 0.5, dtype=torch.float64, device=dev)
            state.append(torch.bernoulli(p, generator=generator))
        return state

    def _kept_term(self, state: Sequence[Tensor]) -> Tensor:
        # -E restricted to the kept layers: all summed layers are passed as "summed" with zero contribution.
        d = self.dbm
        out = 0.0
        for l in self.kept:
            out = out + state[l] @ d.biases[l]
            if l - 1 in self.kept:
                out = out + ((d._c(state[l - 1], l - 1) @ d.W(l)) * d._c(state[l], l)).sum(-1)
        return out  # type: ignore[return-value]

    def log_unnormalized(self, state: list, beta: float) -> Tensor:
        d = self.dbm
        out = beta * self._kept_term(state)
        for l in self.summed:
            a = d.layer_input(state, l)
            out = out + F.softplus((1.0 - beta) * self._base(l) + beta * a).sum(-1)
            if d.centered:
                out = out - beta * ((a - d.biases[l]) @ d.offset(l))
        return out

    def transition(self, state: list, beta: float, generator: Optional[torch.Generator] = None) -> list:
        d = self.dbm
        state = list(state)
        for l in self.summed:
            state[l] = torch.bernoulli(torch.sigmoid((1.0 - beta) * self._base(l) + beta * d.layer_input(state, l)),
                                       generator=generator)
        for first in (1, 2):
            for l in self.kept:
                if l % 2 == first % 2:
                    state[l] = torch.bernoulli(torch.sigmoid(beta * d.layer_input(state, l)), generator=generator)
        return state

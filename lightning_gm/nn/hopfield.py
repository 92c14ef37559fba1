r"""Hopfield network in plain torch: Hebbian storage, energy, synchronous and asynchronous dynamics, retrieval.

States are :math:`s \in \{-1, +1\}^N`. Storing :math:`P` patterns :math:`\xi^\mu` with the Hebbian rule

.. math:: W = \frac1N \sum_{\mu=1}^{P} \xi^\mu \xi^{\mu\top}, \qquad W_{ii} = 0,

gives a symmetric, zero-diagonal coupling matrix and the energy

.. math:: E(s) = -\tfrac12\, s^\top W s.

Dynamics (local field :math:`u_i = \sum_j W_{ij} s_j`):

* **asynchronous**: one unit at a time (a random permutation per sweep), :math:`s_i \leftarrow \operatorname{sgn}(u_i)`.
  Because :math:`W` is symmetric with zero diagonal, a flip changes the energy by
  :math:`\Delta E = -\Delta s_i\, u_i \le 0`, so :math:`E` never rises and the dynamics reach a fixed point;
* **synchronous**: all units at once, :math:`s \leftarrow \operatorname{sgn}(W s)`; the Lyapunov function is then
  :math:`-s_t^\top W s_{t-1}` and the dynamics end in a fixed point *or a 2-cycle*.

Ties (:math:`u_i = 0`) keep the current state, so fixed points are well defined. With :math:`P` random patterns a
stored pattern is retrieved (with a few per cent of wrong bits) up to the load :math:`\alpha = P/N \approx 0.138`
(Amit, Gutfreund & Sompolinsky 1985), above which retrieval collapses.

References:
    Hopfield (1982), Neural networks and physical systems with emergent collective computational abilities, PNAS;
    Amit, Gutfreund & Sompolinsky (1985), Storing infinite numbers of patterns in a spin-glass model of neural
    networks, PRL; MacKay (2003), Information Theory, Inference and Learning Algorithms, chapter 42.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import torch
from torch import Tensor, nn

__all__ = ["HopfieldNetwork", "HopfieldRun", "UpdateMode", "hebbian_weights", "corrupt", "overlap", "to_spins"]

UpdateMode = Literal["async", "sync"]


def to_spins(x: Tensor) -> Tensor:
    r"""Binary data in :math:`[0, 1]` to spins :math:`s = \operatorname{sgn}(2x - 1)` (0.5 maps to +1), ``(B, N)``."""
    x = x.reshape(x.shape[0], -1)
    return torch.where(x >= 0.5, 1.0, -1.0).to(torch.get_default_dtype() if not x.is_floating_point() else x.dtype)


def hebbian_weights(patterns: Tensor) -> Tensor:
    r""":math:`W = \frac1N\sum_\mu \xi^\mu\xi^{\mu\top}` with zero diagonal, from ``(P, N)`` spins; ``(N, N)``."""
    n = patterns.shape[-1]
    w = patterns.T @ patterns / n
    return w.fill_diagonal_(0.0)


def corrupt(s: Tensor, flip_prob: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flip every spin independently with probability ``flip_prob`` (a noisy cue), ``(B, N)``."""
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
    flips = torch.rand(s.shape, generator=generator, dtype=torch.float64, device=s.device) < flip_prob
    return torch.where(flips, -s, s)


def overlap(s: Tensor, patterns: Tensor) -> Tensor:
    r"""Overlap :math:`m = s^\top \xi / N \in [-1, 1]` of each state with its pattern (row by row), ``(B,)``."""
    return (s * patterns).sum(-1) / s.shape[-1]


class HopfieldRun(NamedTuple):
    """Result of :meth:`HopfieldNetwork.run`.

    Attributes:
        state: final states ``(B, N)``.
        energies: ``(sweeps + 1, B)`` energy before the first sweep and after each sweep.
        converged: ``(B,)`` bool, the state was a fixed point of the last sweep.
        sweeps: sweeps done (the same for the batch: until every chain converged or ``max_sweeps``).
    """

    state: Tensor
    energies: Tensor
    converged: Tensor
    sweeps: int


class HopfieldNetwork(nn.Module):
    r"""A Hopfield network of ``n_units`` spins with Hebbian storage (see the module docstring).

    ``W`` is an ``nn.Parameter`` with ``requires_grad=False`` (it is set by :meth:`store`, never by an optimiser) so
    that it is saved in checkpoints and counted as the model's size.

    Args:
        n_units: :math:`N`.
        dtype, device: of ``W``.

    References:
        Hopfield (1982); Amit, Gutfreund & Sompolinsky (1985).
    """

    def __init__(self, n_units: int, dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device | str] = None) -> None:
        super().__init__()
        if n_units < 1:
            raise ValueError(f"n_units must be >= 1, got {n_units}")
        self.n_units = int(n_units)
        self.W = nn.Parameter(torch.zeros(n_units, n_units, dtype=dtype, device=device), requires_grad=False)

    @torch.no_grad()
    def store(self, patterns: Tensor, accumulate: bool = False) -> None:
        r"""Hebbian storage of ``(P, N)`` spin patterns: :math:`W \leftarrow [W +]\ \frac1N\sum_\mu \xi^\mu\xi^{\mu\top}`, zero diagonal."""
        p = patterns.to(self.W).reshape(-1, self.n_units)
        if not torch.all(p.abs() == 1):
            raise ValueError("patterns must be spins in {-1, +1} (see to_spins)")
        w = hebbian_weights(p)
        self.W.copy_(self.W + w if accumulate else w)

    def local_field(self, s: Tensor) -> Tensor:
        r""":math:`u = W s`, ``(B, N)``."""
        return s.to(self.W) @ self.W  # W symmetric

    def energy(self, s: Tensor) -> Tensor:
        r""":math:`E(s) = -\tfrac12 s^\top W s`, ``(B,)``."""
        s = s.to(self.W)
        return -0.5 * (self.local_field(s) * s).sum(-1)

    @torch.no_grad()
    def sync_step(self, s: Tensor) -> Tensor:
        r"""All units at once: :math:`s \leftarrow \operatorname{sgn}(W s)` (ties keep the state)."""
        s = s.to(self.W)
        u = self.local_field(s)
        return torch.where(u > 0, 1.0, torch.where(u < 0, -1.0, s)).to(s)

    @torch.no_grad()
    def async_sweep(self, s: Tensor, generator: Optional[torch.Generator] = None,
                    order: Optional[Tensor] = None, energy_trace: Optional[list[Tensor]] = None) -> Tensor:
        r"""One asynchronous sweep: every unit once, in a random order (or ``order``), each update seeing the
        previous ones. Vectorised over the batch (every chain uses the same order).

        Args:
            s: ``(B, N)`` spins (not modified).
            generator: random stream of the order.
            order: ``(N,)`` explicit update order.
            energy_trace: if given, the energy ``(B,)`` after every single-unit update is appended (for tests and plots).

        Returns:
            ``(B, N)`` new states.
        """
        s = s.to(self.W).clone()
        if order is None:
            order = torch.randperm(self.n_units, generator=generator, device=s.device)
        for i in order.tolist():
            u = s @ self.W[:, i]
            s[:, i] = torch.where(u > 0, 1.0, torch.where(u < 0, -1.0, s[:, i]))
            if energy_trace is not None:
                energy_trace.append(self.energy(s))
        return s

    @torch.no_grad()
    def run(self, s: Tensor, mode: UpdateMode = "async", max_sweeps: int = 100,
            generator: Optional[torch.Generator] = None) -> HopfieldRun:
        r"""Iterate sweeps until every chain stops changing (a fixed point) or ``max_sweeps``.

        Synchronous runs that end in a 2-cycle stop at ``max_sweeps`` with ``converged = False``.

        Args:
            s: ``(B, N)`` initial spins (cues).
            mode: ``async`` (random-order single-unit updates) or ``sync`` (all units at once).
            max_sweeps: sweep limit.
            generator: random stream of the asynchronous order.

        Returns:
            :class:`HopfieldRun`.
        """
        if mode not in ("async", "sync"):
            raise ValueError(f"mode must be 'async' or 'sync', got {mode!r}")
        s = s.to(self.W).reshape(-1, self.n_units)
        energies = [self.energy(s)]
        converged = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        sweeps = 0
        for sweeps in range(1, max_sweeps + 1):
            new = self.async_sweep(s, generator) if mode == "async" else self.sync_step(s)
            converged = (new == s).all(-1)
            s = new
            energies.append(self.energy(s))
            if bool(converged.all()):
                break
        return HopfieldRun(state=s, energies=torch.stack(energies), converged=converged, sweeps=sweeps)

    def forward(self, s: Tensor) -> Tensor:
        """Energy :math:`E(s)`, ``(B,)``."""
        return self.energy(s)

    def extra_repr(self) -> str:
        return f"n_units={self.n_units}"

r"""Importance-weighted evaluation that is a function of (seed, example index) only, so it can be sharded
over processes and gathered to the same numbers as one process (plain torch; ``torch.distributed`` if
initialised).

Every example :math:`x_i` gets its own ``torch.Generator`` seeded by :func:`example_seed` ``(seed, i)``;
its ``k`` samples are drawn from it in chunks, one example at a time (so neither the batch it sits in
nor the process that evaluates it changes a single operation), and

.. math::

    \hat{\mathcal L}_k(x_i) = \log \frac1k \sum_{j=1}^k w_{ij}, \qquad
    \widehat{\mathrm{ELBO}}(x_i) = \frac1k \sum_{j=1}^k \log w_{ij}, \qquad
    w_{ij} = \frac{p(x_i, z_{ij})}{q(z_{ij} \mid x_i)} .

Active units (Burda et al. 2016, section 5.2): unit :math:`u` is active when
:math:`A_u = \operatorname{Cov}_x\left(\mathbb E_{q(z|x)}[z_u]\right) > 10^{-2}`.

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_gm.estimators.importance import IWEstimate, importance_weighted_log_prob

__all__ = ["example_seed", "example_generator", "seeded_importance_weighted", "shard_indices", "gather_by_index",
           "active_units", "SeededLogWeightFn"]

#: ``log_weights(x, n, generators)``: ``(n, B)`` log weights, noise of example ``b`` from ``generators[b]``
SeededLogWeightFn = Callable[[Tensor, int, Sequence[torch.Generator]], Tensor]


def example_seed(seed: int, index: int) -> int:
    """The seed of example ``index`` under the evaluation seed ``seed`` (distinct for distinct pairs)."""
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


def example_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for example ``index``."""
    return torch.Generator(device=device).manual_seed(example_seed(seed, index))


@torch.no_grad()
def seeded_importance_weighted(
    log_weights: SeededLogWeightFn,
    x: Tensor,
    indices: Sequence[int],
    k: int,
    chunk_size: Optional[int] = None,
    seed: int = 0,
    on_example: Optional[Callable[[], None]] = None,
) -> tuple[IWEstimate, list[torch.Generator]]:
    """The ``k``-sample bound and the ELBO of every example of ``x`` (``(B, ...)``), example ``b`` with its
    own generator for index ``indices[b]``.

    Returns the :class:`IWEstimate` (each ``(B,)``, float64) and the generators (advanced past the ``k``
    samples, for further per-example draws such as posterior means).
    """
    gens = [example_generator(seed, int(i), x.device) for i in indices]
    lp, elbo = [], []
    for b in range(x.shape[0]):
        est = importance_weighted_log_prob(lambda xx, n: log_weights(xx, n, [gens[b]]), x[b : b + 1], k, chunk_size)
        lp.append(est.log_prob)
        elbo.append(est.elbo)
        if on_example is not None:
            on_example()
    return IWEstimate(torch.cat(lp), torch.cat(elbo)), gens


def shard_indices(n: int, rank: int, world_size: int) -> Tensor:
    """Indices ``rank, rank + world_size, ...`` of ``n`` examples: every example in exactly one shard."""
    return torch.arange(rank, n, world_size)


def gather_by_index(values: Tensor, indices: Tensor, n: int) -> Tensor:
    """Assemble per-example ``values`` (``(m, ...)``, examples ``indices``) from every process into ``(n, ...)``.

    Without an initialised process group this just scatters the local values into place.
    """
    out = values.new_zeros((n, *values.shape[1:]))
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        out[indices.to(values.device)] = values
        return out
    world = dist.get_world_size()
    m = (n + world - 1) // world
    pad_v = values.new_zeros((m, *values.shape[1:]))
    pad_i = torch.full((m,), -1, dtype=torch.long, device=values.device)
    pad_v[: len(values)] = values
    pad_i[: len(indices)] = indices.to(values.device)
    all_v = [torch.empty_like(pad_v) for _ in range(world)]
    all_i = [torch.empty_like(pad_i) for _ in range(world)]
    dist.all_gather(all_v, pad_v)
    dist.all_gather(all_i, pad_i)
    for v, i in zip(all_v, all_i):
        keep = i >= 0
        out[i[keep]] = v[keep]
    return out


def active_units(means: Tensor, threshold: float = 1e-2) -> tuple[int, Tensor]:
    r"""Number of active units and the activities :math:`A_u = \operatorname{Cov}_x(\mathbb E_q[z_u])` of
    posterior means ``(N, L)`` (population covariance over the ``N`` examples)."""
    m = means.double()
    activity = m.var(dim=0, unbiased=False)
    return int((activity > threshold).sum()), activity

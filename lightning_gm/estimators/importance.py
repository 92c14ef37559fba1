r"""Importance-weighted estimates of :math:`\log p(x)` for latent-variable models, in bounded memory.

.. math::

    \log p(x) \;\ge\; \mathcal L_k(x) = \mathbb E\left[\log \frac1k \sum_{i=1}^k
        \frac{p(x, z_i)}{q(z_i \mid x)}\right], \qquad z_i \sim q(z \mid x),

with :math:`\mathcal L_1` the ELBO and :math:`\mathcal L_k \uparrow \log p(x)` as :math:`k \to \infty`.
The ``k`` samples are drawn in chunks and folded into a running ``logsumexp``, so memory is set by
the chunk size whatever ``k`` is.

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["IWEstimate", "importance_weighted_log_prob", "log_mean_exp"]

#: ``log_weights(x, n)`` returns ``log p(x, z) - log q(z | x)`` for ``n`` fresh samples: shape ``(n, B)``
LogWeightFn = Callable[[Tensor, int], Tensor]


class IWEstimate(NamedTuple):
    """Per-example results, each of shape ``(B,)``."""

    log_prob: Tensor  #: the k-sample bound log (1/k) sum_i w_i
    elbo: Tensor  #: the Monte Carlo ELBO (1/k) sum_i log w_i, from the same samples


def log_mean_exp(a: Tensor, dim: int = 0) -> Tensor:
    """``log mean exp(a)`` along ``dim``, stably (``logsumexp - log n``)."""
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


@torch.no_grad()
def importance_weighted_log_prob(
    log_weights: LogWeightFn,
    x: Tensor,
    k: int,
    chunk_size: Optional[int] = None,
) -> IWEstimate:
    """The ``k``-sample importance-weighted bound of ``log p(x)`` for a batch ``x`` of ``B`` examples.

    Args:
        log_weights: ``(x, n) -> (n, B)`` log importance weights of ``n`` fresh samples per example.
        x: the batch.
        k: number of importance samples per example.
        chunk_size: samples drawn per call of ``log_weights`` (default: all ``k`` at once).

    Returns:
        :class:`IWEstimate` with the bound and the ELBO, accumulated in float64.
    """
    if k < 1:
        raise ValueError(f"the number of importance samples k must be >= 1, got {k}")
    chunk = min(k, chunk_size or k)
    running: Optional[Tensor] = None
    total = None
    done = 0
    while done < k:
        n = min(chunk, k - done)
        lw = log_weights(x, n).double()
        lse = torch.logsumexp(lw, dim=0)
        running = lse if running is None else torch.logaddexp(running, lse)
        total = lw.sum(0) if total is None else total + lw.sum(0)
        done += n
    assert running is not None and total is not None
    return IWEstimate(log_prob=running - math.log(k), elbo=total / k)

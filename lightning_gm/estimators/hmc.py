r"""Hamiltonian Monte Carlo on the latent space of a decoder: the transition kernel behind decoder AIS.

The target at inverse temperature :math:`\beta` is :math:`p_\beta(z) \propto \mathcal N(z; 0, I)\, p(x \mid z)^\beta`
(:func:`hmc_transition`); a chain carries its log-likelihood and gradient (:class:`HMCState`) so that no
evaluation is repeated. Gradients are taken with respect to ``z`` only: :func:`frozen_parameters` takes a
module's parameters out of autograd for the duration.

References: Neal (2011), MCMC using Hamiltonian dynamics; Wu, Burda, Salakhutdinov & Grosse (2017), On the
Quantitative Analysis of Decoder-Based Generative Models, ICLR.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["LogLikelihoodFn", "HMCState", "log_standard_normal", "log_likelihood_and_grad", "hmc_state",
           "hmc_transition", "frozen_parameters"]

#: ``log_likelihood(z, x)``: ``z`` ``(N, latent_dim)``, ``x`` ``(N, D)`` -> ``log p(x | z)`` ``(N,)``
LogLikelihoodFn = Callable[[Tensor, Tensor], Tensor]

_LOG_2PI = math.log(2.0 * math.pi)


class HMCState(NamedTuple):
    """A batch of chains with their cached log-likelihoods and gradients (so no evaluation is repeated)."""

    z: Tensor  #: ``(N, L)`` positions
    log_lik: Tensor  #: ``(N,)`` :math:`\log p(x \mid z)`
    grad: Tensor  #: ``(N, L)`` :math:`\nabla_z \log p(x \mid z)`


def log_standard_normal(z: Tensor) -> Tensor:
    r""":math:`\log \mathcal N(z; 0, I)` summed over the last dimension: ``(..., L) -> (...)``."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


def log_likelihood_and_grad(log_likelihood: LogLikelihoodFn, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``log p(x|z)`` ``(N,)`` (detached) and its gradient in ``z`` ``(N, L)``."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        ll = log_likelihood(zz, x)
        if ll.shape != (z.shape[0],):
            raise ValueError(
                f"log_likelihood(z, x) must return shape ({z.shape[0]},) (one value per row of z), got {tuple(ll.shape)}"
            )
        (grad,) = torch.autograd.grad(ll.sum(), zz)
    return ll.detach(), grad.detach()


def hmc_state(log_likelihood: LogLikelihoodFn, z: Tensor, x: Tensor) -> HMCState:
    """Chains at ``z`` ``(N, L)`` with their log-likelihoods and gradients (the start of :func:`hmc_transition`)."""
    ll, g = log_likelihood_and_grad(log_likelihood, z, x)
    return HMCState(z.detach(), ll, g)


def hmc_transition(
    log_likelihood: LogLikelihoodFn,
    x: Tensor,
    state: HMCState,
    beta: float,
    step_size: Tensor | float,
    leapfrog_steps: int,
    generator: Optional[torch.Generator] = None,
) -> tuple[HMCState, Tensor]:
    r"""One HMC transition leaving :math:`p_\beta(z) \propto \mathcal N(z; 0, I)\, p(x \mid z)^\beta` invariant.

    Potential :math:`U(z) = \tfrac12\|z\|^2 - \beta \log p(x|z)`, kinetic :math:`K(p) = \tfrac12\|p\|^2`,
    :math:`p \sim \mathcal N(0, I)`; leapfrog

    .. math::

        p \leftarrow p - \tfrac\epsilon2 \nabla U(z);\ \ [z \leftarrow z + \epsilon p;\ p \leftarrow p - \epsilon \nabla U(z)]
        \times L \ \text{(last momentum step halved)},

    accepted with probability :math:`\min(1, e^{H_0 - H_1})`, :math:`H = U + K` (a non-finite :math:`H_1`
    is rejected).

    Args:
        log_likelihood: ``(z, x) -> (N,)``.
        x: ``(N, D)`` the observation of each chain.
        state: current chains (positions, cached log-likelihoods and gradients).
        beta: inverse temperature of the likelihood.
        step_size: :math:`\epsilon`, a float or one per chain ``(N,)``.
        leapfrog_steps: :math:`L \ge 1`.
        generator: random generator (momenta and accept draws).

    Returns:
        the new state and the acceptance probabilities ``(N,)``.
    """
    z0, ll0, g0 = state
    n = z0.shape[0]
    eps = torch.as_tensor(step_size, dtype=z0.dtype, device=z0.device)
    eps = eps.reshape(-1, 1) if eps.dim() > 0 else eps
    p0 = torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=z0.device)

    def grad_u(z: Tensor, g: Tensor) -> Tensor:
        return z - beta * g

    z, ll, g = z0, ll0, g0
    p = p0 - 0.5 * eps * grad_u(z, g)
    for i in range(leapfrog_steps):
        z = z + eps * p
        ll, g = log_likelihood_and_grad(log_likelihood, z, x)
        if i < leapfrog_steps - 1:
            p = p - eps * grad_u(z, g)
    p = p - 0.5 * eps * grad_u(z, g)
    # Hamiltonians in float64: the difference of two large numbers decides the move.
    h0 = (0.5 * z0.double().pow(2).sum(-1) - beta * ll0.double()) + 0.5 * p0.double().pow(2).sum(-1)
    h1 = (0.5 * z.double().pow(2).sum(-1) - beta * ll.double()) + 0.5 * p.double().pow(2).sum(-1)
    log_accept = (h0 - h1).clamp(max=0.0)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=z0.device)
    accept = torch.log(u) < log_accept
    col = accept.unsqueeze(-1)
    new = HMCState(torch.where(col, z, z0), torch.where(accept, ll, ll0), torch.where(col, g, g0))
    return new, log_accept.exp()


@contextlib.contextmanager
def frozen_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Parameters of ``module`` out of autograd inside the block (HMC differentiates with respect to ``z`` only,
    no graph through the weights); their ``requires_grad`` flags are restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)

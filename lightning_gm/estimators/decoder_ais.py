r"""AIS log-likelihood estimates for decoder-based models (Wu, Burda, Salakhutdinov & Grosse 2017): one
yardstick for VAEs, GANs and moment-matching nets alike.

Any generator :math:`z \mapsto x` with a standard normal prior and an observation model
:math:`p(x \mid z)` (Gaussian of a stated variance around the generator's output, or Bernoulli) defines

.. math::

    p(x) = \int \mathcal N(z; 0, I)\, p(x \mid z)\, dz .

AIS anneals, separately for every example :math:`x`, from the prior to the posterior through

.. math::

    f_t(z) = \mathcal N(z; 0, I)\, p(x \mid z)^{\beta_t}, \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

so :math:`Z_0 = 1` and :math:`Z_T = p(x)`. Each chain starts from an exact prior sample and accumulates

.. math::

    \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1}) \log p(x \mid z_{t-1}), \qquad
    z_t \sim T_t(\cdot \mid z_{t-1}),

where :math:`T_t` is a Hamiltonian Monte Carlo transition (``leapfrog_steps`` leapfrog steps on the
potential :math:`U_t(z) = \tfrac12\|z\|^2 - \beta_t \log p(x \mid z)`, gradients by
:func:`torch.autograd.grad`, Metropolis-Hastings accept/reject) that leaves :math:`p_t = f_t / Z_t`
invariant. Then :math:`\mathbb E[w] = p(x)`, and the estimate over :math:`M` chains

.. math::

    \log \hat p(x) = \log \frac1M \sum_{m=1}^M w_m, \qquad \mathbb E[\log \hat p(x)] \le \log p(x)

is a *stochastic lower bound* (Jensen), like the importance-weighted bound; with enough intermediate
distributions it is much tighter than IWAE (Wu et al. 2017, section 4).

The schedule is sigmoidal (Wu et al.'s code): :math:`\beta_t \propto \sigma(r(2t/T - 1)) - \sigma(-r)`,
rescaled to :math:`[0, 1]`, with radius :math:`r = 4`; it spends its steps near both ends.

The knobs are one parameter group, :class:`HMCAnnealing` (``chains``, ``steps``, ``leapfrog_steps``,
``step_size``, ``target_accept``, ``seed``), taken by the models and callbacks that use this estimator and
passed down under the same names.

The HMC step size :math:`\epsilon` is per example (shared by its chains) and adapted after every
transition as in Wu et al.: multiplied by 1.02 when the chains' mean acceptance probability exceeds
``target_accept`` and by 0.98 otherwise, clipped to ``[1e-4, max(0.5, step_size)]``. (The adaptation uses
the chains' past, a standard and, in practice, negligible departure from the fixed-kernel AIS proof;
exact kernels are available through :func:`hmc_transition`.)

References: Wu, Burda, Salakhutdinov & Grosse (2017), On the Quantitative Analysis of Decoder-Based
Generative Models, ICLR; Neal (2001), Annealed importance sampling; Neal (2011), MCMC using Hamiltonian
dynamics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gm.estimators.ais import ProgressFn
from lightning_gm.estimators.hmc import (
    HMCState,
    LogLikelihoodFn,
    hmc_state,
    hmc_transition,
    log_standard_normal,
)
from lightning_gm.groups import ParameterGroup

__all__ = [
    "HMCAnnealing",
    "DecoderAISResult",
    "BDMCResult",
    "decoder_bdmc",
    "LogLikelihoodFn",
    "decoder_ais_log_prob",
    "sigmoid_schedule",
    "hmc_transition",
    "HMCState",
    "gaussian_observation",
    "bernoulli_observation",
    "log_standard_normal",
]

_LOG_2PI = math.log(2.0 * math.pi)
#: step-size adaptation factors and floor (Wu et al.'s code)
_STEP_UP, _STEP_DOWN, _STEP_MIN, _STEP_MAX = 1.02, 0.98, 1e-4, 0.5


@dataclass(frozen=True)
class HMCAnnealing(ParameterGroup):
    """AIS with HMC transitions from the prior to the posterior of a decoder-based model (module docstring).

    Args:
        chains: AIS chains per example :math:`M`, >= 1 (16 in Wu et al.).
        steps: annealing steps :math:`T` of :func:`sigmoid_schedule`, >= 1 (Wu et al.: 1,000 to 10,000+).
        leapfrog_steps: leapfrog steps per HMC transition, >= 1.
        step_size: initial HMC step size (then adapted per example), > 0.
        target_accept: HMC acceptance probability the step size is adapted toward, in (0, 1).
        seed: seed of the evaluation's noise (prior draws, momenta, accept tests).

    References:
        Wu, Burda, Salakhutdinov & Grosse (2017); Neal (2011), MCMC using Hamiltonian dynamics.
    """

    key: ClassVar[str] = "ais"
    chains: int = 16
    steps: int = 1000
    leapfrog_steps: int = 10
    step_size: float = 0.05
    target_accept: float = 0.65
    seed: int = 0

    def __post_init__(self) -> None:
        self.require("chains", self.chains >= 1, ">= 1")
        self.require("steps", self.steps >= 1, ">= 1")
        self.require("leapfrog_steps", self.leapfrog_steps >= 1, ">= 1")
        self.require("step_size", self.step_size > 0 and math.isfinite(self.step_size), "> 0")
        self.require("target_accept", 0.0 < self.target_accept < 1.0, "in (0, 1)")


class DecoderAISResult(NamedTuple):
    """Result of :func:`decoder_ais_log_prob`."""

    log_prob: Tensor  #: ``(B,)`` float64, :math:`\log \frac1M \sum_m w_m` per example
    log_weights: Tensor  #: ``(chains, B)`` float64 per-chain log-weights
    accept_rate: float  #: mean HMC acceptance probability over all transitions, chains and examples


def sigmoid_schedule(steps: int, radius: float = 4.0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The sigmoidal annealing schedule of Wu et al. (2017): ``steps + 1`` values from 0 to 1.

    .. math::

        \tilde\beta_t = \sigma\!\left(r\left(\frac{2t}{T} - 1\right)\right), \qquad
        \beta_t = \frac{\tilde\beta_t - \tilde\beta_0}{\tilde\beta_T - \tilde\beta_0}, \quad t = 0..T,

    strictly increasing, symmetric (:math:`\beta_t + \beta_{T-t} = 1`), densest near 0 and 1.

    Args:
        steps: number of annealing steps ``T >= 1`` (``T = 1``: plain importance sampling from the prior).
        radius: :math:`r > 0`; larger concentrates more steps at the ends.
        dtype: of the result.

    Returns:
        ``(steps + 1,)`` tensor, first entry exactly 0 and last exactly 1.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    s = torch.sigmoid(torch.linspace(-radius, radius, int(steps) + 1, dtype=torch.float64))
    b = (s - s[0]) / (s[-1] - s[0])
    b[0], b[-1] = 0.0, 1.0
    return b.to(dtype)


def _check_args(x: Tensor, latent_dim: int, chunk_size: Optional[int]) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be a flat batch of shape (B, D), got shape {tuple(x.shape)}; flatten it with x.flatten(1)")
    checks = [
        ("latent_dim", latent_dim, latent_dim >= 1, ">= 1"),
        ("chunk_size", chunk_size, chunk_size is None or chunk_size >= 1, ">= 1 or None"),
    ]
    for name, value, ok, need in checks:
        if not ok:
            raise ValueError(f"decoder_ais_log_prob: {name} must be {need}, got {value!r}")


def _anneal(log_likelihood: LogLikelihoodFn, x_rep: Tensor, z: Tensor, betas: list[float], chains: int,
            annealing: HMCAnnealing, generator: Optional[torch.Generator], tick: Callable[[], None]) -> tuple[Tensor, float, int]:
    r"""All chains of one block of examples along ``betas`` (increasing: forward; decreasing: reverse from exact
    posterior samples): :math:`\log w = \sum_t (\beta_t - \beta_{t-1}) \log p(x \mid z_{t-1})` with an HMC step at
    :math:`\beta_t` after each increment, the step size adapted per example. Returns ``(log_w, acceptance sum,
    count)``; ``log_w`` is ``(chains * B,)`` float64, chain-major."""
    bsz = x_rep.shape[0] // chains
    state = hmc_state(log_likelihood, z, x_rep)
    log_w = torch.zeros(chains * bsz, dtype=torch.float64, device=x_rep.device)
    eps = torch.full((bsz,), float(annealing.step_size), dtype=z.dtype, device=z.device)
    eps_max = max(_STEP_MAX, float(annealing.step_size))
    acc_sum, acc_count = 0.0, 0
    for t in range(1, len(betas)):
        log_w = log_w + (betas[t] - betas[t - 1]) * state.log_lik.double()
        if not torch.all(torch.isfinite(log_w)):
            raise ValueError(
                f"decoder AIS produced non-finite log-weights at step {t}: log_likelihood returned "
                f"non-finite values (check the observation model, e.g. a Gaussian sigma > 0, Bernoulli logits)"
            )
        state, acc = hmc_transition(log_likelihood, x_rep, state, betas[t], eps.repeat(chains),
                                    annealing.leapfrog_steps, generator)
        acc_mean = acc.view(chains, bsz).mean(0)  # per example
        eps = torch.where(acc_mean.to(eps.dtype) > annealing.target_accept, eps * _STEP_UP, eps * _STEP_DOWN)
        eps = eps.clamp(_STEP_MIN, eps_max)
        acc_sum += float(acc.sum())
        acc_count += acc.numel()
        tick()
    return log_w, acc_sum, acc_count


def _ticker(total: int, progress: Optional[ProgressFn]) -> Callable[[], None]:
    """A per-step callback calling ``progress(done, total)`` about 100 times over ``total`` steps."""
    every, done = max(1, total // 100), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None and (done[0] % every == 0 or done[0] == total):
            progress(done[0], total)

    return tick


def decoder_ais_log_prob(
    log_likelihood: LogLikelihoodFn,
    x: Tensor,
    latent_dim: int,
    annealing: HMCAnnealing = HMCAnnealing(),
    *,
    generator: Optional[torch.Generator] = None,
    progress: Optional[ProgressFn] = None,
    chunk_size: Optional[int] = None,
) -> DecoderAISResult:
    r"""AIS estimate of :math:`\log p(x) = \log \int \mathcal N(z; 0, I)\, p(x|z)\, dz` for every example of ``x``.

    See the module docstring for the maths. ``annealing.chains`` independent chains per example start from the
    prior and anneal through :func:`sigmoid_schedule` ``(annealing.steps)`` with :func:`hmc_transition`; the
    cost is about ``chains * B * steps * leapfrog_steps`` evaluations of ``log_likelihood`` and its gradient.

    Args:
        log_likelihood: ``(z, x) -> log p(x | z)``: ``z`` ``(N, latent_dim)``, ``x`` ``(N, D)`` (each example
            repeated once per chain, chain-major: row ``c * B + b`` is chain ``c`` of example ``b``),
            returns ``(N,)``; differentiable in ``z`` (e.g. :func:`gaussian_observation`,
            :func:`bernoulli_observation`).
        x: ``(B, D)`` flat examples.
        latent_dim: dimension of ``z`` (the prior is :math:`\mathcal N(0, I_{L})`).
        annealing: chains per example, steps, leapfrog steps, initial step size and target acceptance
            (:class:`HMCAnnealing`; its ``seed`` is the caller's, who builds ``generator`` from it).
        generator: random generator (prior draws, momenta, accept tests); default the global one.
        progress: optional ``progress(step, total)`` hook, called about 100 times over the run.
        chunk_size: examples annealed at once (bounds memory to ``chunk_size * chains`` chains); default all.

    Returns:
        :class:`DecoderAISResult` (``log_prob`` ``(B,)`` and ``log_weights`` ``(chains, B)``, float64).
    """
    _check_args(x, latent_dim, chunk_size)
    chains = annealing.chains
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    b_total = x.shape[0]
    chunk = max(b_total if chunk_size is None else min(chunk_size, b_total), 1)
    betas = sigmoid_schedule(annealing.steps).tolist()
    tick = _ticker(annealing.steps * max(1, math.ceil(b_total / chunk)), progress)
    all_lw: list[Tensor] = []
    acc_sum, acc_count = 0.0, 0
    for start in range(0, b_total, chunk):
        xb = x[start : start + chunk]
        bsz = xb.shape[0]
        z = torch.randn(chains * bsz, latent_dim, generator=generator, dtype=x.dtype, device=x.device)
        log_w, a_sum, a_count = _anneal(log_likelihood, xb.repeat(chains, 1), z, betas, chains, annealing, generator, tick)
        acc_sum, acc_count = acc_sum + a_sum, acc_count + a_count
        all_lw.append(log_w.view(chains, bsz))
    log_weights = torch.cat(all_lw, dim=1)
    log_prob = torch.logsumexp(log_weights, dim=0) - math.log(chains)
    return DecoderAISResult(log_prob, log_weights, acc_sum / max(acc_count, 1))


class BDMCResult(NamedTuple):
    """Result of :func:`decoder_bdmc` on simulated examples."""

    lower: Tensor  #: ``(B,)`` float64 forward AIS :math:`\log\hat p(x)`: a stochastic lower bound
    upper: Tensor  #: ``(B,)`` float64 reverse AIS :math:`-\log\frac1M\sum w_{\mathrm{rev}}`: a stochastic upper bound
    accept_rate: float  #: mean HMC acceptance over both directions


def decoder_bdmc(
    log_likelihood: LogLikelihoodFn,
    x: Tensor,
    z: Tensor,
    annealing: HMCAnnealing = HMCAnnealing(),
    *,
    generator: Optional[torch.Generator] = None,
    progress: Optional[ProgressFn] = None,
) -> BDMCResult:
    r"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2016; Wu et al. 2017) on *simulated* examples.

    For pairs :math:`(z, x)` drawn from the model (:math:`z \sim \mathcal N(0, I)`, :math:`x \sim p(x \mid z)`),
    :math:`z` is an exact sample of the posterior :math:`p(z \mid x)`. Forward AIS from the prior gives
    :math:`\mathbb E[\log \hat p(x)] \le \log p(x)`; reverse AIS from :math:`z` (the schedule reversed,
    :math:`\log w_{\mathrm{rev}} = \sum_t (\beta_t - \beta_{t-1}) \log p(x \mid z_{t-1})` with decreasing
    :math:`\beta`) gives :math:`\mathbb E[w_{\mathrm{rev}}] = 1 / p(x)`, so :math:`-\log\frac1M\sum_m w_{\mathrm{rev},m}`
    is a stochastic *upper* bound. The true :math:`\log p(x)` lies between the two, and their gap bounds the error
    of forward AIS with the same settings on data like the model's own.

    Args:
        log_likelihood: ``(z, x) -> log p(x | z)`` as for :func:`decoder_ais_log_prob`.
        x: ``(B, D)`` simulated examples.
        z: ``(B, latent_dim)`` the latents that generated them.
        annealing: chains per example (in each direction), steps, HMC settings.
        generator: random generator.
        progress: ``progress(step, total)`` hook over both directions.
    """
    _check_args(x, z.shape[-1], None)
    chains, b = annealing.chains, x.shape[0]
    x = x.detach().to(z.dtype)
    betas = sigmoid_schedule(annealing.steps).tolist()
    tick = _ticker(2 * annealing.steps, progress)
    x_rep = x.repeat(chains, 1)
    z0 = torch.randn(chains * b, z.shape[-1], generator=generator, dtype=z.dtype, device=z.device)
    fwd, a1, c1 = _anneal(log_likelihood, x_rep, z0, betas, chains, annealing, generator, tick)
    rev, a2, c2 = _anneal(log_likelihood, x_rep, z.detach().repeat(chains, 1), betas[::-1], chains, annealing,
                          generator, tick)
    lower = torch.logsumexp(fwd.view(chains, b), 0) - math.log(chains)
    upper = -(torch.logsumexp(rev.view(chains, b), 0) - math.log(chains))
    return BDMCResult(lower, upper, (a1 + a2) / max(c1 + c2, 1))


def gaussian_observation(decoder: Callable[[Tensor], Tensor], sigma: float | Tensor) -> LogLikelihoodFn:
    r"""The log-likelihood of a Gaussian observation model around a generator's output.

    .. math::

        \log p(x \mid z) = -\sum_{d=1}^{D} \left[\frac{(x_d - g_d(z))^2}{2\sigma_d^2} + \log\sigma_d
            + \tfrac12\log 2\pi\right]

    Args:
        decoder: ``z (N, L) -> g(z)``, any shape with ``N`` rows (flattened to ``(N, D)``).
        sigma: the observation standard deviation :math:`\sigma > 0`, a float or ``(D,)`` tensor (Wu et al.
            choose it on validation data; state it beside the number).
    """
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if not bool(torch.all(s > 0)):
        raise ValueError(f"gaussian_observation: sigma must be > 0, got {sigma}")

    def log_likelihood(z: Tensor, x: Tensor) -> Tensor:
        mean = decoder(z).flatten(1)
        if mean.shape != x.shape:
            raise ValueError(f"decoder output {tuple(mean.shape)} does not match the data {tuple(x.shape)}")
        sd = s.to(dtype=mean.dtype, device=mean.device)
        # the normaliser sum_d (log sigma_d + log(2 pi) / 2) for a scalar or per-dimension sigma
        log_norm = (torch.log(sd) + 0.5 * _LOG_2PI).expand(x.shape[-1]).sum()
        return -0.5 * ((x - mean) / sd).pow(2).sum(-1) - log_norm

    return log_likelihood


def bernoulli_observation(decoder_logits: Callable[[Tensor], Tensor]) -> LogLikelihoodFn:
    r"""The log-likelihood of independent Bernoulli pixels with logits :math:`\eta(z)`.

    .. math::

        \log p(x \mid z) = \sum_{d=1}^{D} x_d \eta_d(z) - \operatorname{softplus}(\eta_d(z))

    (``-binary_cross_entropy_with_logits``, stable for large logits).

    Args:
        decoder_logits: ``z (N, L) -> logits``, any shape with ``N`` rows (flattened to ``(N, D)``).
    """

    def log_likelihood(z: Tensor, x: Tensor) -> Tensor:
        logits = decoder_logits(z).flatten(1)
        if logits.shape != x.shape:
            raise ValueError(f"decoder output {tuple(logits.shape)} does not match the data {tuple(x.shape)}")
        return -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none").sum(-1)

    return log_likelihood

r"""The conservative side of an energy model's AIS estimate: reverse annealing from the data (RAISE).

Forward AIS under-estimates :math:`\log Z` in expectation, so the test log-likelihood it gives is optimistic.
The Reverse AIS Estimator of Burda, Grosse & Salakhutdinov (2015) instead bounds the log-likelihood *from
below*: it scores the data under the **annealing model** :math:`p_{\mathrm{ann}}`, the distribution of the last
state of the forward annealing chain (:math:`x_0 \sim p_0`, :math:`x_k \sim T_k(\cdot \mid x_{k-1})`), which is
close to the target when the chain anneals slowly. For a data point (a state :math:`x` of the path), the
reversed chain :math:`x_{K-1} = x`, :math:`x_{k-1} \sim \tilde T_k(\cdot \mid x_k)` down to :math:`\beta = 0` is a
proposal for the annealing model's path, and with reversible transitions (:math:`\tilde T_k = T_k`, true of the
block-Gibbs sweeps of every path here) the importance weight telescopes to

.. math::

    \hat p_{\mathrm{ann}}(x) = \frac{f_1(x)}{Z_0} \prod_{k=1}^{K} \frac{f_{\beta_{k-1}}(x_k)}{f_{\beta_k}(x_k)}
    = \frac{f_1(x)}{Z_0}\, w_{\mathrm{rev}}(x), \qquad \mathbb E[\hat p_{\mathrm{ann}}(x)] = p_{\mathrm{ann}}(x),

i.e. the reverse-AIS weight of :func:`~lightning_gm.estimators.ais.run_ais` started at the data. With
:math:`C` chains per example :math:`\log \frac1C \sum_c \hat p_c` is a stochastic lower bound of
:math:`\log p_{\mathrm{ann}}(x)` (Jensen): the conservative counterpart of the forward estimate. When the path's
state holds latent layers too (a DBM keeps :math:`v` and its even layers), they are drawn from a proposal
:math:`q(h \mid v)` and :math:`f_1(x)` becomes :math:`f_1(v, h) / q(h \mid v)` (importance sampling over
:math:`h`, still unbiased for :math:`p_{\mathrm{ann}}(v)`); a model supplies that start as a
:class:`ReverseStart` (its ``log_numerator`` is :math:`\log f_1` minus any proposal density).

References:
    Burda, Grosse & Salakhutdinov (2015), Accurate and conservative estimates of MRF log-likelihood using reverse
    annealing, AISTATS; Neal (2001), Annealed importance sampling; Grosse, Ghahramani & Adams (2016), Sandwiching
    the marginal likelihood using bidirectional Monte Carlo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from lightning_gm.estimators.ais import FULL_STEPS, AnnealingPath, ProgressFn, as_beta_list, betas_schedule, run_ais
from lightning_gm.groups import ParameterGroup

__all__ = ["Bracket", "ReverseStart", "RAISEResult", "raise_log_prob"]


@dataclass(frozen=True)
class Bracket(ParameterGroup):
    """The conservative counterpart of a test NLL on an evenly spaced subset of the test set.

    Args:
        examples: evenly spaced test examples (``i * N // examples``), >= 0 (0 = no bracket); all of them when the
            test set is smaller. 500 by cost: RAISE of 500 images x 14,500 steps costs ~2.4x the 100-run AIS of
            log Z on the 784-500 RBM (bench/RESULTS.md, issue 17 study).
        chains: reverse-annealing chains per example, >= 1.
        steps: annealing steps, >= 3; ``None``: the model's forward schedule (``ais.steps``).
        seed: seed of the chains (block ``j`` of examples uses ``chain_generator(seed, j)``: the numbers do not
            depend on the number of processes).
        block: examples annealed together (memory ``block * chains`` states; larger products are faster), >= 1.
    """

    key: ClassVar[str] = "bracket"
    examples: int = 500
    chains: int = 1
    steps: Optional[int] = None
    seed: int = 0
    block: int = 500

    def __post_init__(self) -> None:
        self.require("examples", self.examples >= 0, ">= 0")
        self.require("chains", self.chains >= 1, ">= 1")
        self.require("steps", self.steps is None or self.steps >= 3, ">= 3 or null")
        self.require("block", self.block >= 1, ">= 1")


@dataclass(frozen=True)
class ReverseStart:
    """Where reverse annealing starts, for ``B`` examples with ``C`` chains each (rows chain-major: ``c * B + b``).

    Attributes:
        path: the annealing path (the same family of distributions as the forward AIS of :math:`\\log Z`).
        state: the path's state at :math:`\\beta = 1`, batch ``C * B`` (the data, and latent layers drawn from a
            proposal if the state has any).
        log_numerator: ``(C * B,)`` float64, :math:`\\log f_1(x)` minus the log proposal density of the drawn
            latent layers (and plus any change of variables of the data), so that
            :math:`\\exp(\\text{log\\_numerator} - \\log Z_0) w_{\\mathrm{rev}}` is unbiased for the example's density.
        examples: ``B``.
    """

    path: AnnealingPath[Any]
    state: Any
    log_numerator: Tensor
    examples: int


class RAISEResult(NamedTuple):
    """Result of :func:`raise_log_prob`."""

    log_prob: Tensor  #: ``(B,)`` float64, :math:`\log \frac1C \sum_c \hat p_c(x_b)`: a stochastic lower bound
    log_weights: Tensor  #: ``(C, B)`` float64 per-chain :math:`\log \hat p_c(x_b)`


def raise_log_prob(
    start: ReverseStart,
    steps: int = FULL_STEPS,
    *,
    betas: Optional[Tensor | Sequence[float]] = None,
    generator: Optional[torch.Generator] = None,
    progress: Optional[ProgressFn] = None,
    progress_every: int = 100,
) -> RAISEResult:
    r"""RAISE: per-example stochastic lower bounds :math:`\log \frac1C \sum_c \hat p_c(x)` (module docstring).

    All ``C * B`` chains anneal together, :math:`\beta: 1 \to 0` along the reversed :func:`betas_schedule`
    ``(steps)`` (or ``betas``), with the path's fused float32 steps and float64 weights.

    Args:
        start: the path, the states at :math:`\beta = 1` and their log-numerators (from the model).
        steps: annealing steps (the forward schedule's, reversed).
        betas: an explicit increasing schedule from 0 to 1 instead (reversed here).
        generator: random generator.
        progress: ``progress(step, total)`` hook.
        progress_every: its period in steps.

    Returns:
        :class:`RAISEResult`.
    """
    beta_list = (betas_schedule(steps).tolist() if betas is None else as_beta_list(betas))[::-1]
    b = int(start.examples)
    numerator = start.log_numerator.detach().to(torch.float64).flatten()
    if b < 1 or numerator.numel() % b:
        raise ValueError(f"log_numerator has {numerator.numel()} entries, not a multiple of examples={b}")
    log_w = run_ais(start.path, beta_list, start.state, generator, progress, progress_every)
    per_chain = (numerator - start.path.log_z_base() + log_w.to(numerator.device)).view(-1, b)
    return RAISEResult(torch.logsumexp(per_chain, 0) - math.log(per_chain.shape[0]), per_chain)

r"""Annealed Importance Sampling (AIS) estimates of log-partition functions.

AIS (Neal 2001) moves ``runs`` independent chains along a path of unnormalised densities
:math:`f_0, f_1, \dots, f_K` from a tractable base (:math:`Z_0` known, exact samples) to the target
:math:`f_K` and accumulates importance weights

.. math::

    \log w = \sum_{k=1}^{K} \big[\log f_k(x_{k}) - \log f_{k-1}(x_{k})\big],
    \qquad x_1 \sim p_0,\quad x_{k+1} \sim T_k(\cdot \mid x_k),

where :math:`T_k` leaves :math:`p_k = f_k / Z_k` invariant. Then :math:`E[w] = Z_K / Z_0`, so
:math:`\hat Z_K = Z_0 \cdot \frac1M \sum_m w^{(m)}` is unbiased for :math:`Z_K`, and by Jensen

* **forward AIS** (base -> target) gives :math:`E[\log \hat Z] \le \log Z`: it *under*-estimates
  :math:`\log Z` in expectation and so *over*-estimates log-likelihoods (the optimistic side);
* **reverse AIS** (target -> base, chains started from exact samples of the target) estimates
  :math:`Z_0 / Z_K`, hence :math:`E[\log \hat Z] \ge \log Z`: it *over*-estimates :math:`\log Z` and
  *under*-estimates log-likelihoods (the conservative side; Burda, Grosse & Salakhutdinov 2015).
  The guarantee needs exact target samples; with approximate ones (e.g. persistent chains) it is
  only approximate.

The loop (:func:`run_ais`) is generic over an :class:`AnnealingPath` (unnormalised log density at
:math:`\beta` and a :math:`\beta`-invariant transition); :class:`~lightning_gm.estimators.rbm_ais.RBMAnnealingPath`
is the Bernoulli-RBM path of Salakhutdinov & Murray (2008), and every other energy model (the RBM variants,
the convolutional RBM, the DBM) plugs its own path into the same loop through the one entry point
:func:`ais_log_partition`. :class:`AISSchedule` is the parameter group a model takes for it (runs, steps,
seed, the exact-enumeration limit), with the same names down to the loop.

References:
    Neal (2001), Annealed importance sampling, Statistics and Computing 11;
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML;
    Burda, Grosse & Salakhutdinov (2015), Accurate and conservative estimates of MRF
    log-likelihood using reverse annealing, AISTATS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Generic, Optional, Sequence, TypeVar

import torch
from torch import Tensor

from lightning_gm.estimators.ais_result import AISResult, DEFAULT_BATCHES, summarize_log_weights
from lightning_gm.groups import ParameterGroup

__all__ = [
    "AISSchedule", "AnnealingPath", "AISResult", "ProgressFn", "FULL_RUNS", "FULL_STEPS", "default_betas",
    "betas_schedule", "as_beta_list", "base_rate_log_odds", "run_ais", "summarize_log_weights", "DEFAULT_BATCHES",
    "softplus_difference", "FLOAT32_INCREMENT_LIMIT", "ais_log_partition", "LastStateCache",
]


StateT = TypeVar("StateT")
ValueT = TypeVar("ValueT")


#: progress hook ``progress(step, total)``, called every ``progress_every`` annealing steps and at the end.
ProgressFn = Callable[[int, int], None]


# Segments of the literature schedule: (start, end, number of intervals) with spacings 1e-3, 1e-4, 1e-5.
_SCHEDULE_SEGMENTS: tuple[tuple[float, float, int], ...] = ((0.0, 0.5, 500), (0.5, 0.9, 4000), (0.9, 1.0, 10000))


#: the literature protocol of Salakhutdinov & Murray (2008): 100 runs x 14,500 steps
FULL_RUNS, FULL_STEPS = 100, 14500


@dataclass(frozen=True)
class AISSchedule(ParameterGroup):
    """How a model obtains its :math:`\log Z` at test: exact enumeration when small enough, else forward AIS.

    Args:
        runs: AIS chains (runs), >= 1 (the literature: 100). Split over the DDP processes.
        steps: annealing steps, i.e. intermediate distributions (:func:`betas_schedule`), >= 3 (the literature:
            14,500). A schedule other than 100 x 14,500 is stated in the estimator label (``ais 100x1,000``).
        seed: seed of the AIS chains (process ``r`` uses :func:`~lightning_gm.nn.rbm.chain_seed` ``(seed, r)``).
        exact_max_units: enumerate :math:`\log Z` exactly (estimator ``exact``) when the model's smaller
            enumerable side has at most this many binary units, >= 0 (0 = always AIS).

    References:
        Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML.
    """

    key: ClassVar[str] = "model.init_args.ais"
    runs: int = FULL_RUNS
    steps: int = FULL_STEPS
    seed: int = 0
    exact_max_units: int = 20

    def __post_init__(self) -> None:
        self.require("runs", self.runs >= 1, ">= 1")
        self.require("steps", self.steps >= 3, ">= 3")
        self.require("exact_max_units", self.exact_max_units >= 0, ">= 0")

    @property
    def is_full(self) -> bool:
        """Whether this is the literature protocol (100 runs x 14,500 steps)."""
        return (self.runs, self.steps) == (FULL_RUNS, FULL_STEPS)


# ---------------------------------------------------------------------------------------- schedules
def betas_schedule(steps: int, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Inverse temperatures :math:`0 = \beta_0 < \dots < \beta_K = 1` shaped like the literature schedule.

    Three linearly spaced segments ``[0, 0.5]``, ``[0.5, 0.9]``, ``[0.9, 1]`` receive
    ``500 : 4000 : 10000`` of the ``K = steps`` steps (each segment at least one), i.e. the
    schedule of Salakhutdinov & Murray (2008) scaled to ``K`` steps: dense near :math:`\beta = 1`
    where the distributions change fastest for a trained model.

    Args:
        steps: number of annealing steps ``K >= 3``.
        dtype: of the result.

    Returns:
        ``(K + 1,)`` strictly increasing tensor from 0 to 1.
    """
    if steps < 3:
        raise ValueError(f"steps must be >= 3, got {steps}")
    total = sum(n for _, _, n in _SCHEDULE_SEGMENTS)
    counts = [max(1, round(steps * n / total)) for _, _, n in _SCHEDULE_SEGMENTS]
    counts[-1] = steps - sum(counts[:-1])  # exact total; the last segment is the largest
    pieces = [torch.zeros(1, dtype=torch.float64)]
    for (lo, hi, _), n in zip(_SCHEDULE_SEGMENTS, counts):
        pieces.append(torch.linspace(lo, hi, n + 1, dtype=torch.float64)[1:])  # drop the shared endpoint
    return torch.cat(pieces).to(dtype)


def default_betas(dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The AIS schedule of Salakhutdinov & Murray (2008): 14,500 steps, 14,501 values of :math:`\beta`.

    :math:`\beta` goes from 0 to 0.5 in steps of :math:`10^{-3}` (500 steps), from 0.5 to 0.9 in steps of
    :math:`10^{-4}` (4,000) and from 0.9 to 1 in steps of :math:`10^{-5}` (10,000).

    Salakhutdinov's ``RBM_AIS.m`` demo writes ``beta = [0:1/1000:0.5 0.5:1/10000:0.9 0.9:1/100000:1.0]``,
    which has 14,503 entries because 0.5 and 0.9 appear twice; a repeated :math:`\beta` adds exactly
    zero to the log-weights and only one extra Gibbs transition, so we drop the duplicates.

    Returns:
        ``(14501,)`` tensor.
    """
    return betas_schedule(FULL_STEPS, dtype)


def as_beta_list(betas: Tensor | Sequence[float]) -> list[float]:
    """An explicit schedule checked (``0 = beta_0 <= ... <= beta_K = 1``, ``K >= 1``) and as a list of floats."""
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 2:
        raise ValueError("betas must contain at least the two endpoints 0 and 1")
    if float(b[0]) != 0.0 or float(b[-1]) != 1.0:
        raise ValueError(f"betas must start at 0 and end at 1, got {float(b[0])} ... {float(b[-1])}")
    if torch.any(b[1:] < b[:-1]):
        raise ValueError("betas must be non-decreasing")
    # Python floats: indexing a tensor once per step would dominate the loop's run time.
    return b.tolist()


# ---------------------------------------------------------------------------------------- the increment
#: paths use :func:`softplus_difference` in float32 while :math:`|\Delta\beta| \max|a|` stays below this (``expm1``
#: cannot overflow), else the float64 difference of two softplus values (coarse schedules only)
FLOAT32_INCREMENT_LIMIT = 30.0


def softplus_difference(prob_to: Tensor, delta: Tensor) -> Tensor:
    r""":math:`\operatorname{softplus}(a) - \operatorname{softplus}(a - \delta)` elementwise, given
    :math:`\sigma(a)` (``prob_to``) and :math:`\delta`, accurate to the precision of the inputs:

    .. math::

        \operatorname{softplus}(a) - \operatorname{softplus}(a - \delta)
        = \log\frac{1 + e^{a}}{1 + e^{a - \delta}} = -\log\big(\sigma(-a) + \sigma(a) e^{-\delta}\big)
        = -\operatorname{log1p}\big(\sigma(a)\, \operatorname{expm1}(-\delta)\big).

    An AIS step changes :math:`\beta` by :math:`10^{-5}`-:math:`10^{-3}`, so the two softplus values agree to
    5-8 digits and their float32 difference would keep 0-2 of them; this form keeps float32's relative
    precision of the (small) difference itself, and :math:`\sigma(a)` is the probability the Gibbs transition at
    :math:`\beta` samples with anyway. Valid for either sign of :math:`\delta` while ``expm1(-delta)`` is finite.
    """
    return torch.log1p(torch.expm1(-delta).mul_(prob_to)).neg_()


# ---------------------------------------------------------------------------------------- paths
class AnnealingPath(ABC, Generic[StateT]):
    r"""A path of unnormalised densities :math:`f_\beta`, :math:`\beta \in [0, 1]`, for :func:`run_ais`.

    :math:`f_0` must be tractable (exact samples, known :math:`\log Z_0`) and :math:`f_1` is the
    target. ``StateT`` is whatever a chain carries (a tensor of visibles for an RBM; a DBM could
    carry a tuple of layers), with a leading batch dimension of ``runs``.
    """

    @abstractmethod
    def log_z_base(self) -> float:
        r""":math:`\log Z_0`."""

    @abstractmethod
    def sample_base(self, n: int, generator: torch.Generator | None = None) -> StateT:
        r"""``n`` exact samples of :math:`p_0`."""

    @abstractmethod
    def log_unnormalized(self, state: StateT, beta: float) -> Tensor:
        r""":math:`\log f_\beta(x)` per chain, ``(n,)`` float64."""

    @abstractmethod
    def transition(self, state: StateT, beta: float, generator: torch.Generator | None = None) -> StateT:
        r"""One Markov transition leaving :math:`p_\beta = f_\beta / Z_\beta` invariant."""

    def log_ratio(self, state: StateT, beta_from: float, beta_to: float) -> Tensor:
        r""":math:`\log f_{\beta_{to}}(x) - \log f_{\beta_{from}}(x)`, ``(n,)`` float64.

        Override when the difference can be computed more cheaply or more accurately.
        """
        return self.log_unnormalized(state, beta_to) - self.log_unnormalized(state, beta_from)

    def advance(self, state: StateT, beta_from: float, beta_to: float, generator: torch.Generator | None = None,
                transition: bool = True) -> tuple[Tensor, StateT]:
        r"""One AIS step, fused: the log-weight increment :math:`\log f_{\beta_{to}}(x) - \log f_{\beta_{from}}(x)`
        (``(n,)`` float64) and, when ``transition``, the next state :math:`T_{\beta_{to}}(x)` (else ``state``).

        The default calls :meth:`log_ratio` and :meth:`transition`; a path whose increment and transition share
        work (the hidden pre-activations of an RBM, its sampling probabilities) overrides it, as zuko's
        transforms fuse ``call_and_ladj``.
        """
        increment = self.log_ratio(state, beta_from, beta_to).to(torch.float64)
        return increment, (self.transition(state, beta_to, generator) if transition else state)


class LastStateCache(Generic[StateT, ValueT]):
    r"""``statistic(state)`` remembered for the last state it was asked for (the same tensor object).

    :meth:`AnnealingPath.advance`'s default calls ``log_ratio(x_k)`` then ``transition(x_k)`` on the same state, so
    a path whose log-density and transition share a costly statistic of the state (a convolution, the subspace
    logits, the spike-and-slab projections) computes it once per step by calling its cache in both. Identity, not
    equality, is the test: a new state is a new tensor.

    Args:
        statistic: ``state -> value``, a pure function of the state (the path's parameters are fixed).
    """

    def __init__(self, statistic: Callable[[StateT], ValueT]) -> None:
        self.statistic = statistic
        self._last: Optional[tuple[StateT, ValueT]] = None

    def __call__(self, state: StateT) -> ValueT:
        if self._last is None or self._last[0] is not state:
            self._last = (state, self.statistic(state))
        return self._last[1]


# ---------------------------------------------------------------------------------------- core loop
def run_ais(
    path: AnnealingPath[StateT],
    betas: Tensor | Sequence[float],
    initial_state: StateT,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    progress_every: int = 100,
) -> Tensor:
    r"""Run all chains of one AIS sweep along ``betas`` (vectorised over the batch of chains).

    With :math:`\beta_0, \dots, \beta_K` the given sequence (increasing for forward AIS, decreasing
    for reverse AIS) and ``initial_state`` distributed as :math:`p_{\beta_0}`:

    .. math::

        \log w = \sum_{k=1}^{K} \big[\log f_{\beta_k}(x_k) - \log f_{\beta_{k-1}}(x_k)\big],
        \quad x_1 = \text{initial\_state},\ x_{k+1} = T_{\beta_k}(x_k)\ (k < K),

    so :math:`E[w] = Z_{\beta_K} / Z_{\beta_0}`.

    Args:
        path: the annealing path.
        betas: ``(K + 1,)`` inverse temperatures, from the start state's :math:`\beta` to the end's
            (0 -> 1 forward, 1 -> 0 reverse; not validated here, see :func:`ais_log_partition`).
        initial_state: chains at :math:`\beta_0`, batch size = number of runs.
        generator: random generator for the transitions.
        progress: optional ``progress(step, K)`` hook, called every ``progress_every`` steps and at ``K``.
        progress_every: period of the hook, in steps.

    Returns:
        ``(runs,)`` float64 log-weights.
    """
    beta_list = torch.as_tensor(betas, dtype=torch.float64).flatten().tolist()
    n_steps = len(beta_list) - 1
    if n_steps < 1:
        raise ValueError("betas needs at least two values")
    if progress_every < 1:
        raise ValueError(f"progress_every must be >= 1, got {progress_every}")
    state = initial_state
    log_w: Tensor | None = None
    advance = path.advance
    with torch.no_grad():
        for k in range(1, n_steps + 1):
            increment, state = advance(state, beta_list[k - 1], beta_list[k], generator, k < n_steps)
            log_w = increment if log_w is None else log_w.add_(increment)  # accumulated in float64
            if progress is not None and (k % progress_every == 0 or k == n_steps):
                progress(k, n_steps)
    assert log_w is not None
    return log_w


# ---------------------------------------------------------------------------------------- the entry point
def base_rate_log_odds(data: Tensor, eps: float = 1e-3) -> Tensor:
    r"""Visible biases of the maximum-likelihood base-rate model: :math:`\log\frac{p_i}{1-p_i}`.

    :math:`p_i` is the mean of unit ``i`` over ``data`` ``(N, n_visible)``, clamped to
    ``[eps, 1 - eps]`` so never-on/always-on pixels get finite biases. Returns ``(n_visible,)`` float64.
    """
    p = data.detach().to(torch.float64).reshape(-1, data.shape[-1]).mean(0).clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def ais_log_partition(
    path: AnnealingPath[StateT],
    runs: int = FULL_RUNS,
    steps: int = FULL_STEPS,
    *,
    betas: Optional[Tensor | Sequence[float]] = None,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    progress_every: int = 100,
    reverse: bool = False,
    initial_state: Optional[StateT] = None,
) -> AISResult:
    r"""Estimate :math:`\log Z` of the target of ``path`` by AIS: the one entry point for every energy model.

    Forward (default): ``runs`` chains start from exact base samples and anneal :math:`\beta: 0 \to 1`
    along :func:`betas_schedule` ``(steps)``; :math:`E[\log\hat Z] \le \log Z` (log-likelihoods come out
    optimistic).

    Reverse (``reverse=True``): the chains start at ``initial_state``, which should be samples of the
    target itself (e.g. :func:`~lightning_gm.estimators.partition.sample_rbm_exact` for small models, or
    long Gibbs chains), and anneal :math:`\beta: 1 \to 0`; the weights estimate :math:`Z_0 / Z` and
    :math:`E[\log\hat Z] \ge \log Z` when the initial samples are exact (log-likelihoods come out
    conservative). Bracketing :math:`\log Z` between both is the usual sanity check.

    Args:
        path: the annealing path (e.g. :class:`RBMAnnealingPath`, a DBM or conv-RBM path).
        runs: forward chains (ignored in reverse mode: one chain per initial state).
        steps: annealing steps ``K`` of :func:`betas_schedule` (14,500 = the literature schedule).
        betas: an explicit schedule from 0 to 1 instead (``steps`` is then ``len(betas) - 1``).
        generator: random generator.
        progress: optional ``progress(step, total)`` hook (e.g. :mod:`lightning_gm.progress`).
        progress_every: call ``progress`` every this many steps.
        reverse: run reverse AIS from ``initial_state``.
        initial_state: target samples (the path's state, batch = runs), required when ``reverse``.

    Returns:
        :class:`AISResult`.
    """
    beta_list = betas_schedule(steps).tolist() if betas is None else as_beta_list(betas)
    if reverse:
        if initial_state is None:
            raise ValueError("reverse AIS needs initial_state: samples of the target (e.g. exact or long Gibbs chains)")
        state = initial_state
        beta_list = beta_list[::-1]
    else:
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        state = path.sample_base(runs, generator)
    log_w = run_ais(path, beta_list, state, generator, progress, progress_every)
    return summarize_log_weights(log_w, path.log_z_base(), reverse=reverse, steps=len(beta_list) - 1)

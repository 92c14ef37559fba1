"""Tests of :mod:`lightning_gm.estimators.ais` against exact log-partition functions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_gm.estimators import (
    AISResult,
    AnnealingPath,
    LastStateCache,
    RBMAnnealingPath,
    ais_log_partition,
    base_rate_log_odds,
    betas_schedule,
    default_betas,
    enumerate_binary,
    log_partition_enumerate,
    rbm_log_likelihood,
    run_ais,
    sample_rbm_exact,
    summarize_log_weights,
)
from lightning_gm.nn.rbm import BernoulliRBM
from tests.estimators.conftest import random_rbm


# ----------------------------------------------------------------------------- schedules
def test_default_betas_is_the_literature_schedule() -> None:
    b = default_betas()
    assert b.shape == (14501,) and b.dtype == torch.float64
    assert b[0] == 0.0 and b[-1] == 1.0
    d = b.diff()
    assert torch.all(d > 0)
    torch.testing.assert_close(d[:500], torch.full((500,), 1e-3, dtype=torch.float64))
    torch.testing.assert_close(d[500:4500], torch.full((4000,), 1e-4, dtype=torch.float64))
    torch.testing.assert_close(d[4500:], torch.full((10000,), 1e-5, dtype=torch.float64))
    assert float(b[500]) == pytest.approx(0.5) and float(b[4500]) == pytest.approx(0.9)


@pytest.mark.parametrize("n", [3, 10, 1000, 3001])
def test_betas_schedule_has_requested_number_of_steps(n: int) -> None:
    b = betas_schedule(n)
    assert b.shape == (n + 1,) and b[0] == 0.0 and b[-1] == 1.0 and torch.all(b.diff() > 0)


# ----------------------------------------------------------------------------- exact special cases
def test_path_endpoints_match_base_and_target() -> None:
    rbm = BernoulliRBM(6, 4, dtype=torch.float64)
    with torch.no_grad():
        rbm.W.normal_(generator=torch.Generator().manual_seed(0))
        rbm.c.fill_(0.3)
    b_base = torch.linspace(-1, 1, 6, dtype=torch.float64)
    path = RBMAnnealingPath(rbm, b_base, dtype=torch.float64)
    v = enumerate_binary(6)
    # beta = 1: the target's -F(v); beta = 0: base-rate model with H free hidden units
    torch.testing.assert_close(path.log_unnormalized(v, 1.0), -rbm.free_energy(v).detach())
    torch.testing.assert_close(path.log_unnormalized(v, 0.0), v @ b_base + 4 * math.log(2.0))
    assert path.log_z_base() == pytest.approx(float(torch.logsumexp(path.log_unnormalized(v, 0.0), 0)))
    for lo, hi in ((0.3, 0.7), (0.7, 0.3), (0.9, 0.90001), (0.5, 0.5)):
        expected_ratio = path.log_unnormalized(v, hi) - path.log_unnormalized(v, lo)
        torch.testing.assert_close(path.log_ratio(v, lo, hi), expected_ratio, rtol=1e-9, atol=1e-12)
        # float32 Gibbs, float64 weights: the increment keeps float32's relative precision of the difference
        fast = RBMAnnealingPath(rbm, b_base).log_ratio(v.float(), lo, hi)
        assert fast.dtype == torch.float64
        torch.testing.assert_close(fast, expected_ratio, rtol=1e-5, atol=1e-6 * abs(hi - lo))


def test_ais_is_exact_when_weights_do_not_depend_on_the_chain() -> None:
    # W = 0 and b_A = b: log f_beta(v) = b'v + sum_j softplus(beta c_j), so every run has the same weight
    # sum_j softplus(c_j) - H log 2 and AIS must return log Z exactly, whatever the schedule.
    rbm = BernoulliRBM(5, 3, weight_std=0.0, dtype=torch.float64)
    with torch.no_grad():
        rbm.b.copy_(torch.tensor([-1.0, 0.5, 2.0, 0.0, -3.0]))
        rbm.c.copy_(torch.tensor([1.5, -2.0, 0.7]))
    g = torch.Generator().manual_seed(0)
    res = ais_log_partition(RBMAnnealingPath(rbm, rbm.b.detach(), dtype=torch.float64), runs=7, steps=20, generator=g)
    exact = log_partition_enumerate(rbm)
    assert res.log_z == pytest.approx(exact, abs=1e-12)
    fast = ais_log_partition(RBMAnnealingPath(rbm, rbm.b.detach()), runs=7, steps=20, generator=g)
    assert fast.log_z == pytest.approx(exact, abs=1e-6)  # float32 chains: float32's precision
    assert res.log_z_stderr == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(res.log_weights, res.log_weights[0].expand(7), atol=1e-12)


def test_summary_statistics_match_direct_computation() -> None:
    lw = torch.tensor([0.1, -0.3, 0.25, 0.0, -1.0, 0.4, -0.2, 0.05], dtype=torch.float64)
    w = lw.exp()
    res = summarize_log_weights(lw, log_z_base=2.0, batches=2)
    assert res.log_z == pytest.approx(2.0 + math.log(w.mean().item()))
    assert res.delta_stderr == pytest.approx((w.std() / w.mean() / math.sqrt(8)).item())
    ess = (w.sum() ** 2 / (w**2).sum()).item()
    assert res.effective_sample_size == pytest.approx(ess)
    assert res.ess_stderr == pytest.approx(lw.std().item() / math.sqrt(ess))
    halves = torch.tensor([math.log(w[:4].mean().item()), math.log(w[4:].mean().item())], dtype=torch.float64)
    assert res.batches == 2 and res.replicate_stderr == pytest.approx(halves.std().item() / math.sqrt(2))
    se = max(res.delta_stderr, res.replicate_stderr, res.ess_stderr)
    assert res.log_z_stderr == se and res.log_z_interval == pytest.approx((res.log_z - 3 * se, res.log_z + 3 * se))
    # the reverse estimate inverts the mean weight
    rev = summarize_log_weights(lw, log_z_base=2.0, reverse=True)
    assert rev.log_z == pytest.approx(2.0 - math.log(w.mean().item()))
    assert rev.log_z_interval == pytest.approx((rev.log_z - 3 * rev.log_z_stderr, rev.log_z + 3 * rev.log_z_stderr))
    # one run dominates: the ESS is ~1, the interval is wide but finite (the delta method's lower end was -inf),
    # and large log-weights do not overflow
    wild = summarize_log_weights(torch.tensor([1000.0, 0.0, 0.0, 1.0], dtype=torch.float64), 0.0)
    assert wild.log_z == pytest.approx(1000.0 - math.log(4.0)) and wild.effective_sample_size == pytest.approx(1.0)
    lo, hi = wild.log_z_interval
    assert math.isfinite(lo) and math.isfinite(hi) and hi - lo > 1000


class GaussianScalePath(AnnealingPath[torch.Tensor]):
    """f_beta(x) = exp(-lambda_beta x^2 / 2), lambda_beta = (1 - beta) + beta / s^2, with exact-sampling transitions."""

    def __init__(self, s: float) -> None:
        self.s = s

    def _precision(self, beta: float) -> float:
        return (1.0 - beta) + beta / self.s**2

    def log_z_base(self) -> float:
        return 0.5 * math.log(2 * math.pi)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, generator=generator, dtype=torch.float64)

    def log_unnormalized(self, state: torch.Tensor, beta: float) -> torch.Tensor:
        return -0.5 * self._precision(beta) * state**2

    def transition(self, state: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(state.shape, generator=generator, dtype=torch.float64) / math.sqrt(self._precision(beta))


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_run_ais_is_generic_over_paths(s: float) -> None:
    path = GaussianScalePath(s)
    g = torch.Generator().manual_seed(1)
    lw = run_ais(path, torch.linspace(0, 1, 201, dtype=torch.float64), path.sample_base(2000, g), g)
    res = summarize_log_weights(lw, path.log_z_base())
    exact = 0.5 * math.log(2 * math.pi) + math.log(s)
    assert abs(res.log_z - exact) < 4 * res.log_z_stderr + 1e-3
    assert res.log_z_interval[0] <= exact <= res.log_z_interval[1]


def test_progress_hook_reports_steps() -> None:
    calls: list[tuple[int, int]] = []
    ais_log_partition(
        RBMAnnealingPath(BernoulliRBM(4, 3)), runs=3, steps=250, progress=lambda k, n: calls.append((k, n)),
        progress_every=100,
    )
    assert calls == [(100, 250), (200, 250), (250, 250)]


def test_invalid_arguments() -> None:
    path = RBMAnnealingPath(BernoulliRBM(4, 3))
    with pytest.raises(ValueError, match="start at 0"):
        ais_log_partition(path, betas=torch.linspace(0.1, 1, 10))
    with pytest.raises(ValueError, match="non-decreasing"):
        ais_log_partition(path, betas=[0.0, 0.6, 0.4, 1.0])
    with pytest.raises(ValueError, match="initial_state"):
        ais_log_partition(path, steps=10, reverse=True)
    with pytest.raises(ValueError, match="steps must be >= 3"):
        ais_log_partition(path, steps=2)


# ----------------------------------------------------------------------------- trained RBM
@pytest.fixture(scope="module")
def trained(digits_rbm: dict) -> dict:
    """The trained 64x20 digits RBM (tests/estimators/conftest.py)."""
    return digits_rbm


def test_trained_model_is_non_trivial(trained: dict) -> None:
    rbm, x, log_z = trained["rbm"], trained["x"], trained["log_z"]
    assert rbm.W.detach().abs().max() > 1.0  # weights far from their 0.01 initialisation
    ll = rbm_log_likelihood(rbm, x, log_z).detach().double()
    assert ll.shape == (len(x),) and torch.all(ll < 0)
    # better than the base-rate (independent pixels) model by a clear margin
    base = trained["base"]
    base_ll = (x.double() @ base - F.softplus(base).sum()).mean()
    assert ll.mean() > base_ll + 2.0


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_ais_matches_exact_log_partition(trained: dict, seed: int) -> None:
    res = ais_log_partition(RBMAnnealingPath(trained["rbm"], trained["base"]), runs=100, steps=3000,
                            generator=torch.Generator().manual_seed(seed))
    exact = trained["log_z"]
    assert isinstance(res, AISResult) and not res.reverse and res.steps == 3000 and res.runs == 100
    assert res.log_weights.shape == (100,) and res.log_weights.dtype == torch.float64
    assert res.log_z_base == pytest.approx(float(F.softplus(trained["base"]).sum()) + 20 * math.log(2.0))
    assert abs(res.log_z - exact) < 0.1
    assert res.log_z_interval[0] <= exact <= res.log_z_interval[1]
    assert 0 < res.log_z_stderr < 0.1 and res.effective_sample_size > 50


def test_float32_chains_leave_the_estimate_unchanged_in_law(trained: dict) -> None:
    """The fast path (float32 products and draws, float64 log-weights) and the float64 reference path: over 6
    independent seeds each, both mean log Z are within 3 standard errors (of the mean over seeds) of the enumerated
    log Z and of each other."""
    exact = trained["log_z"]
    estimates = {}
    for dtype in (torch.float64, torch.float32):
        path = RBMAnnealingPath(trained["rbm"], trained["base"], dtype=dtype)
        estimates[dtype] = torch.tensor([ais_log_partition(path, runs=50, steps=500,
                                                           generator=torch.Generator().manual_seed(10 + s)).log_z
                                         for s in range(6)], dtype=torch.float64)
    for est in estimates.values():
        se = float(est.std() / math.sqrt(len(est)))
        assert abs(float(est.mean()) - exact) < 3 * se + 0.02
    a, b = estimates[torch.float64], estimates[torch.float32]
    assert abs(float(a.mean() - b.mean())) < 3 * math.sqrt(float(a.var() + b.var()) / 6) + 0.02


def test_more_sweeps_per_step_stay_unbiased_and_mix_more(trained: dict) -> None:
    """3 Gibbs sweeps per intermediate distribution: still within error of the enumerated log Z, with a larger ESS
    than 1 sweep at the same number of steps."""
    exact, ess = trained["log_z"], {}
    for sweeps in (1, 3):
        path = RBMAnnealingPath(trained["rbm"], trained["base"], sweeps=sweeps)
        res = ais_log_partition(path, runs=100, steps=200, generator=torch.Generator().manual_seed(5))
        assert abs(res.log_z - exact) < 3 * res.log_z_stderr + 0.02
        ess[sweeps] = res.effective_sample_size
    assert ess[3] > ess[1]
    with pytest.raises(ValueError, match="sweeps"):
        RBMAnnealingPath(trained["rbm"], sweeps=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_reverse_ais_from_exact_samples_matches_exact_log_partition(trained: dict, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v, _ = sample_rbm_exact(trained["rbm"], 100, generator=g)
    res = ais_log_partition(RBMAnnealingPath(trained["rbm"], trained["base"]), steps=3000, generator=g, reverse=True,
                            initial_state=v.double())
    exact = trained["log_z"]
    assert res.reverse and res.log_weights.shape == (100,)
    assert abs(res.log_z - exact) < 0.1
    assert res.log_z_interval[0] <= exact <= res.log_z_interval[1]


def test_uniform_base_on_small_random_rbm() -> None:
    rbm = random_rbm(12, 8, seed=4)
    res = ais_log_partition(RBMAnnealingPath(rbm), runs=200, steps=2000, generator=torch.Generator().manual_seed(4))
    exact = log_partition_enumerate(rbm)
    assert res.log_z_base == pytest.approx(12 * math.log(2.0) + 8 * math.log(2.0))
    assert abs(res.log_z - exact) < 0.1
    assert res.log_z_interval[0] <= exact <= res.log_z_interval[1]


def test_rbm_log_likelihood_normalises() -> None:
    rbm = random_rbm(6, 4, seed=2)
    v = enumerate_binary(6)
    ll = rbm_log_likelihood(rbm, v, log_partition_enumerate(rbm)).detach()
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_literature_schedule_is_tight(trained: dict) -> None:
    res = ais_log_partition(RBMAnnealingPath(trained["rbm"], trained["base"]), runs=100,
                            generator=torch.Generator().manual_seed(3))
    assert res.steps == 14500
    assert abs(res.log_z - trained["log_z"]) < 0.05 and res.log_z_stderr < 0.02


def test_last_state_cache_computes_once_per_state_object() -> None:
    calls: list[torch.Tensor] = []
    cache = LastStateCache(lambda x: calls.append(x) or 2 * x)
    x, y = torch.ones(3), torch.ones(3)
    assert torch.equal(cache(x), 2 * x) and torch.equal(cache(x), 2 * x)
    assert len(calls) == 1  # the same tensor again: the remembered value
    cache(y)
    assert len(calls) == 2 and calls[1] is y  # an equal but new tensor is a new state

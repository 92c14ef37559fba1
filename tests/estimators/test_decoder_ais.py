"""Decoder AIS (Wu et al. 2017) against exact answers: linear-Gaussian decoders (closed-form ``p(x)``),
unbiased weights on a 1-D model, HMC invariance on Gaussian targets, the sigmoidal schedule, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_gm.estimators.decoder_ais import (
    HMCAnnealing,
    HMCState,
    bernoulli_observation,
    decoder_ais_log_prob,
    gaussian_observation,
    hmc_transition,
    log_standard_normal,
    sigmoid_schedule,
)

F64 = torch.float64


def linear_gaussian(latent: int, dim: int, sigma: float, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``W, b``, data ``x`` drawn from the model and the exact ``log p(x) = log N(x; b, W W' + sigma^2 I)``."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, latent, generator=g, dtype=F64)
    b = torch.randn(dim, generator=g, dtype=F64)
    x = torch.randn(n, latent, generator=g, dtype=F64) @ W.T + b + sigma * torch.randn(n, dim, generator=g, dtype=F64)
    cov = W @ W.T + sigma**2 * torch.eye(dim, dtype=F64)
    exact = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    return W, b, x, exact


# ------------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("n_steps", [1, 2, 7, 100, 1000])
@pytest.mark.parametrize("radius", [1.0, 4.0])
def test_sigmoid_schedule_properties(n_steps: int, radius: float):
    b = sigmoid_schedule(n_steps, radius)
    assert b.shape == (n_steps + 1,) and b.dtype == F64
    assert b[0].item() == 0.0 and b[-1].item() == 1.0
    assert torch.all(b[1:] > b[:-1])
    assert torch.allclose(b + b.flip(0), torch.ones_like(b), atol=1e-12)  # symmetric about t = T / 2
    if n_steps >= 4:
        gaps = b.diff()
        assert gaps[0] < gaps[n_steps // 2] and gaps[-1] < gaps[n_steps // 2]  # denser at both ends


def test_sigmoid_schedule_matches_formula():
    t = torch.arange(11, dtype=F64)
    s = torch.sigmoid(4.0 * (2 * t / 10 - 1))
    assert torch.allclose(sigmoid_schedule(10), (s - s[0]) / (s[-1] - s[0]), atol=1e-14)


# ------------------------------------------------------------------------------------------- exact answers
@pytest.mark.parametrize(
    "latent, dim, sigma, seed",
    [(2, 5, 0.5, 0), (3, 6, 1.0, 1), (2, 8, 0.3, 2)],
)
def test_recovers_linear_gaussian_log_prob(latent: int, dim: int, sigma: float, seed: int):
    W, b, x, exact = linear_gaussian(latent, dim, sigma, 4, seed)
    ll = gaussian_observation(lambda z: z @ W.T + b, sigma)
    res = decoder_ais_log_prob(ll, x, latent, HMCAnnealing(chains=128, steps=2500, leapfrog_steps=2, step_size=0.1),
                               generator=torch.Generator().manual_seed(100 + seed))
    assert res.log_prob.shape == (4,) and res.log_weights.shape == (128, 4)
    assert (res.log_prob - exact).abs().max() < 0.1
    assert 0.3 < res.accept_rate < 0.99  # the adaptation steers toward target_accept = 0.65


def test_few_steps_are_loose_and_many_are_tight():
    """More intermediate distributions tighten the bound: plain importance sampling (T = 1) from the prior is
    far below log p(x), and the gap shrinks with T (exact recovery at large T is tested above)."""
    W, b, x, exact = linear_gaussian(2, 8, 0.3, 4, 5)
    ll = gaussian_observation(lambda z: z @ W.T + b, 0.3)
    gaps = [
        (exact - decoder_ais_log_prob(ll, x, 2, HMCAnnealing(chains=16, steps=t), generator=torch.Generator().manual_seed(0))
         .log_prob).mean().item()
        for t in (1, 300)
    ]
    assert gaps[0] > 1.0 and -0.1 < gaps[1] < 0.5


@pytest.mark.parametrize("x_value, seed", [(0.3, 0), (2.5, 1)])
def test_weights_are_unbiased_and_log_prob_is_a_lower_bound(x_value: float, seed: int):
    r"""1-D model :math:`z \sim N(0,1)`, :math:`x|z \sim N(2z, 0.5^2)`: :math:`p(x) = N(0, 4.25)`. With few steps
    the weights are noisy, yet their mean is :math:`p(x)` (within 4 standard errors) while the mean log-weight
    sits clearly below :math:`\log p(x)` (Jensen)."""
    m = 20000
    x = torch.tensor([[x_value]], dtype=F64)
    log_px = torch.distributions.Normal(0.0, math.sqrt(4.25)).log_prob(torch.tensor(x_value, dtype=F64)).item()
    ll = gaussian_observation(lambda z: 2.0 * z, 0.5)
    res = decoder_ais_log_prob(ll, x, 1, HMCAnnealing(chains=m, steps=3, leapfrog_steps=3, step_size=0.3),
                               generator=torch.Generator().manual_seed(seed))
    r = torch.exp(res.log_weights[:, 0] - log_px)  # mean 1 if unbiased
    assert abs(r.mean().item() - 1.0) < 4 * r.std().item() / math.sqrt(m)
    lw = res.log_weights[:, 0]
    assert lw.mean().item() < log_px - 0.05 and lw.mean().item() < log_px - 5 * lw.std().item() / math.sqrt(m)
    assert abs(res.log_prob.item() - log_px) < 0.05


# ------------------------------------------------------------------------------------------- HMC
def _gaussian_target(beta: float, mean: float, s: float, latent: int):
    r"""``log p(x|z) = -|z - mean|^2 / (2 s^2)`` (up to a constant): :math:`p_\beta` is
    :math:`N(\mu, v I)` with :math:`1/v = 1 + \beta / s^2`, :math:`\mu = v \beta\, mean / s^2`."""
    def ll(z: Tensor, x: Tensor) -> Tensor:
        return -0.5 * ((z - mean) ** 2).sum(-1) / s**2

    var = 1.0 / (1.0 + beta / s**2)
    return ll, var * beta * mean / s**2, var


@pytest.mark.parametrize("step_size, start", [(0.2, "exact"), (0.8, "exact"), (0.2, "zeros")])
def test_hmc_leaves_gaussian_target_invariant(step_size: float, start: str):
    """From exact samples the moments stay put (also with a step size that rejects often); from a wrong start
    the chains converge to them."""
    n, latent, beta = 20000, 2, 0.7
    ll, mu, var = _gaussian_target(beta, 1.5, 0.5, latent)
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(n, 1, dtype=F64)
    if start == "exact":
        z = mu + math.sqrt(var) * torch.randn(n, latent, generator=g, dtype=F64)
    else:
        z = torch.zeros(n, latent, dtype=F64)
    zz = z.clone().requires_grad_(True)
    lz = ll(zz, x)
    state = HMCState(z, lz.detach(), torch.autograd.grad(lz.sum(), zz)[0])
    accs = []
    for _ in range(30):
        state, acc = hmc_transition(ll, x, state, beta, step_size, 5, g)
        accs.append(acc.mean().item())
    z = state.z
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2.0 / n)
    assert torch.all((z.mean(0) - mu).abs() < 5 * se_mean)
    assert torch.all((z.var(0) - var).abs() < 5 * se_var)
    assert 0.05 < sum(accs) / len(accs) < 1.0  # it moves, and rejections happen
    assert torch.allclose(state.log_lik, ll(z, x))  # the cache follows the accepted positions


# ------------------------------------------------------------------------------------------- observation models
@pytest.mark.parametrize("per_dim", [False, True])
def test_gaussian_observation_matches_torch(per_dim: bool):
    g = torch.Generator().manual_seed(0)
    z, x = torch.randn(6, 2, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)
    A = torch.randn(4, 2, generator=g, dtype=F64)
    sigma = torch.tensor([0.3, 0.5, 1.0, 2.0], dtype=F64) if per_dim else 0.7
    got = gaussian_observation(lambda z: (z @ A.T).view(6, 1, 2, 2), sigma)(z, x)  # image-shaped output is flattened
    want = torch.distributions.Normal(z @ A.T, torch.as_tensor(sigma, dtype=F64)).log_prob(x).sum(-1)
    assert torch.allclose(got, want)


def test_bernoulli_observation_matches_torch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, generator=g, dtype=F64)
    x = torch.bernoulli(torch.full((5, 7), 0.4, dtype=F64), generator=g)
    A = 10 * torch.randn(7, 3, generator=g, dtype=F64)  # large logits: the stable form matters
    got = bernoulli_observation(lambda z: z @ A.T)(z, x)
    want = torch.distributions.Bernoulli(logits=z @ A.T).log_prob(x).sum(-1)
    assert torch.allclose(got, want)


def test_bernoulli_decoder_module_under_no_grad_and_chunks():
    """An ``nn.Module`` decoder with trainable parameters, called inside ``torch.no_grad()`` (as in a test loop),
    chunked over the batch: finite results, the same generator gives the same numbers, progress reaches the end."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5))
    x = torch.bernoulli(torch.full((5, 5), 0.5))
    seen: list[tuple[int, int]] = []

    def run() -> Tensor:
        with torch.no_grad():
            return decoder_ais_log_prob(bernoulli_observation(net), x, 2,
                                        HMCAnnealing(chains=4, steps=20, leapfrog_steps=2), chunk_size=2, generator=torch.Generator().manual_seed(1),
                                        progress=lambda s, t: seen.append((s, t))).log_prob

    a, b = run(), run()
    assert a.shape == (5,) and torch.all(torch.isfinite(a)) and torch.equal(a, b)
    assert torch.all(a < 0)  # a probability of a binary vector
    assert seen[-1] == (60, 60)  # 3 chunks x 20 steps
    assert all(p.grad is None for p in net.parameters())  # the model's parameters are left alone


def test_log_standard_normal():
    z = torch.randn(3, 4, dtype=F64)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(log_standard_normal(z), want)


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"chains": 0}, "chains"),
        ({"steps": 0}, "steps"),
        ({"leapfrog_steps": 0}, "leapfrog_steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"target_accept": 1.0}, "target_accept"),
    ],
)
def test_bad_annealing_settings_name_the_key(kwargs: dict, name: str):
    with pytest.raises(ValueError, match=rf"^ais\.{name} must be"):
        HMCAnnealing(**kwargs)


@pytest.mark.parametrize("kwargs, name", [({"chunk_size": 0}, "chunk_size"), ({"latent_dim": 0}, "latent_dim")])
def test_bad_arguments_name_the_argument(kwargs: dict, name: str):
    args = {"latent_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        decoder_ais_log_prob(lambda z, x: -z.pow(2).sum(-1), torch.zeros(3, 4), **args)


def test_bad_shapes_and_sigma():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        decoder_ais_log_prob(lambda z, x: -z.pow(2).sum(-1), torch.zeros(3, 1, 4), 2)
    with pytest.raises(ValueError, match=r"must return shape \(6,\)"):
        decoder_ais_log_prob(lambda z, x: -z.pow(2), torch.zeros(3, 4), 2, HMCAnnealing(chains=2))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_observation(lambda z: z, 0.0)
    with pytest.raises(ValueError, match="does not match the data"):
        decoder_ais_log_prob(gaussian_observation(lambda z: z, 1.0), torch.zeros(3, 4), 2, HMCAnnealing(steps=2))
    with pytest.raises(ValueError, match="steps"):
        sigmoid_schedule(0)

"""Tests of :mod:`lightning_gm.nn.rbm` against enumeration, numerical integration and hand-derived formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM, GibbsState

KINDS = ["bernoulli", "gaussian"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Run single-threaded: these are tiny matmuls, for which intra-op threads only add overhead and, on a
    loaded 2-core machine, make each BLAS call wait for a descheduled worker (1000x slowdowns seen)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def enumerate_bits(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All 2^n binary rows (independent of the package's own helper)."""
    return torch.tensor([[(k >> j) & 1 for j in range(n)] for k in range(2**n)], dtype=dtype)


def make_rbm(kind: str, n_visible: int, n_hidden: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    """An RBM with O(1) random parameters, so every term of the energy matters."""
    g = torch.Generator().manual_seed(seed)
    if kind == "bernoulli":
        rbm = BernoulliRBM(n_visible, n_hidden, dtype=dtype)
    else:
        sigma = 0.5 + torch.rand(n_visible, generator=g, dtype=dtype)
        rbm = GaussianBernoulliRBM(n_visible, n_hidden, sigma=sigma, learn_sigma=True, dtype=dtype)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(n_visible, n_hidden, generator=g, dtype=dtype))
        rbm.b.copy_(torch.randn(n_visible, generator=g, dtype=dtype))
        rbm.c.copy_(torch.randn(n_hidden, generator=g, dtype=dtype))
    return rbm


def random_visibles(kind: str, n: int, n_visible: int, seed: int = 1, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    if kind == "bernoulli":
        return torch.bernoulli(torch.full((n, n_visible), 0.5, dtype=dtype), generator=g)
    return 2.0 * torch.randn(n, n_visible, generator=g, dtype=dtype)


def explicit_energy(rbm, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The energies exactly as written in the brief (no shared code path with the module)."""
    if isinstance(rbm, GaussianBernoulliRBM):
        var = rbm.sigma**2
        quad = ((v - rbm.b) ** 2 / (2 * var)).sum(-1)
        return quad - torch.einsum("...i,ij,...j->...", v / var, rbm.W, h) - (h * rbm.c).sum(-1)
    return -torch.einsum("...i,ij,...j->...", v, rbm.W, h) - (v * rbm.b).sum(-1) - (h * rbm.c).sum(-1)


# ----------------------------------------------------------------------------- energies
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(3, 2), (5, 4), (2, 7)])
def test_energy_matches_definition(kind: str, shape: tuple[int, int]) -> None:
    rbm = make_rbm(kind, *shape)
    v = random_visibles(kind, 6, shape[0])
    h = enumerate_bits(shape[1])[torch.arange(6) % 2 ** shape[1]]
    torch.testing.assert_close(rbm.energy(v, h), explicit_energy(rbm, v, h))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(3, 2), (4, 5), (6, 8)])
def test_free_energy_equals_minus_log_sum_over_hiddens(kind: str, shape: tuple[int, int]) -> None:
    n_visible, n_hidden = shape
    rbm = make_rbm(kind, n_visible, n_hidden, seed=sum(shape))
    v = random_visibles(kind, 7, n_visible)
    h_all = enumerate_bits(n_hidden)
    energies = explicit_energy(rbm, v[:, None, :], h_all[None, :, :])  # (7, 2^H)
    expected = -torch.logsumexp(-energies, dim=1)
    torch.testing.assert_close(rbm.free_energy(v), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rbm(v), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 2), (5, 4), (8, 3)])
def test_bernoulli_free_energy_hidden_equals_minus_log_sum_over_visibles(shape: tuple[int, int]) -> None:
    n_visible, n_hidden = shape
    rbm = make_rbm("bernoulli", n_visible, n_hidden, seed=3)
    h_all = enumerate_bits(n_hidden)
    v_all = enumerate_bits(n_visible)
    energies = explicit_energy(rbm, v_all[None, :, :], h_all[:, None, :])  # (2^H, 2^D)
    torch.testing.assert_close(rbm.free_energy_hidden(h_all), -torch.logsumexp(-energies, dim=1))


def test_gaussian_free_energy_hidden_matches_numerical_integral() -> None:
    # F(h) = -log \int exp(-E(v, h)) dv on a fine 2-D grid (trapezoid: spectrally accurate for Gaussians).
    rbm = make_rbm("gaussian", 2, 3, seed=5)
    h_all = enumerate_bits(3)
    grid = torch.linspace(-20.0, 20.0, 801, dtype=torch.float64)
    vv = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    dv = (grid[1] - grid[0]).item()
    with torch.no_grad():
        for h in h_all:
            integrand_log = -explicit_energy(rbm, vv, h.expand(vv.shape[0], -1))
            log_integral = torch.logsumexp(integrand_log, 0) + 2 * math.log(dv)
            torch.testing.assert_close(rbm.free_energy_hidden(h), -log_integral, rtol=0, atol=1e-8)


FLOAT_CHECKS = {
    "free_energy": lambda rbm, v, h: rbm.free_energy(v),
    "energy": lambda rbm, v, h: rbm.energy(v, h),
    "mean_hiddens": lambda rbm, v, h: rbm.mean_hiddens(v),
    "mean_visibles": lambda rbm, v, h: rbm.mean_visibles(h),
    "free_energy_hidden": lambda rbm, v, h: rbm.free_energy_hidden(h),
    "reconstruction_error": lambda rbm, v, h: rbm.reconstruction_error(v),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quantity", sorted(FLOAT_CHECKS))
def test_float32_and_float64_agree(kind: str, quantity: str) -> None:
    rbm64 = make_rbm(kind, 10, 6, seed=11)
    rbm32 = make_rbm(kind, 10, 6, seed=11).float()
    v = random_visibles(kind, 64, 10)
    h = enumerate_bits(6)
    fn = FLOAT_CHECKS[quantity]
    a, b = fn(rbm32, v.float(), h.float()), fn(rbm64, v, h)
    assert a.dtype == torch.float32 and b.dtype == torch.float64
    torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)
    # float64 inputs into a float32 model are cast to the parameter dtype
    assert fn(rbm32, v, h).dtype == torch.float32


# ----------------------------------------------------------------------------- conditionals
def _bernoulli_prob(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return (p**x * (1 - p) ** (1 - x)).prod(-1)


def test_bernoulli_conditionals_match_joint_table() -> None:
    rbm = make_rbm("bernoulli", 4, 3, seed=2)
    v_all, h_all = enumerate_bits(4), enumerate_bits(3)
    with torch.no_grad():
        log_joint = -explicit_energy(rbm, v_all[:, None, :], h_all[None, :, :])  # (16, 8)
        joint = torch.exp(log_joint - torch.logsumexp(log_joint.reshape(-1), 0))
        p_h_given_v = joint / joint.sum(1, keepdim=True)
        p_v_given_h = joint / joint.sum(0, keepdim=True)
        factorised_h = _bernoulli_prob(h_all[None, :, :], rbm.mean_hiddens(v_all)[:, None, :])
        factorised_v = _bernoulli_prob(v_all[:, None, :], rbm.mean_visibles(h_all)[None, :, :])
    torch.testing.assert_close(factorised_h, p_h_given_v)
    torch.testing.assert_close(factorised_v, p_v_given_h)
    torch.testing.assert_close(torch.sigmoid(rbm.visible_logits(h_all)), rbm.mean_visibles(h_all))
    torch.testing.assert_close(torch.sigmoid(rbm.hidden_logits(v_all)), rbm.mean_hiddens(v_all))


def test_gaussian_conditionals_match_joint_density() -> None:
    rbm = make_rbm("gaussian", 4, 3, seed=4)
    v = random_visibles("gaussian", 5, 4)
    h_all = enumerate_bits(3)
    with torch.no_grad():
        neg_e = -explicit_energy(rbm, v[:, None, :], h_all[None, :, :])  # (5, 8)
        # p(h | v) = exp(-E(v, h) + F(v))
        p_h_given_v = torch.exp(neg_e + rbm.free_energy(v)[:, None])
        factorised_h = _bernoulli_prob(h_all[None, :, :], rbm.mean_hiddens(v)[:, None, :])
        # log p(v | h) = -E(v, h) + F(h)  must be the Gaussian N(b + W h, sigma^2) density
        log_p_v_given_h = neg_e + rbm.free_energy_hidden(h_all)[None, :]
        normal = torch.distributions.Normal(rbm.mean_visibles(h_all)[None, :, :], rbm.sigma)
        expected = normal.log_prob(v[:, None, :]).sum(-1)
    torch.testing.assert_close(factorised_h, p_h_given_v)
    torch.testing.assert_close(log_p_v_given_h, expected)
    torch.testing.assert_close(rbm.mean_visibles(h_all), h_all @ rbm.W.T + rbm.b)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_sample_hiddens_mean_matches_mean_hiddens(kind: str, seed: int) -> None:
    rbm = make_rbm(kind, 5, 4, seed=seed)
    v = random_visibles(kind, 3, 5, seed=seed)
    n = 20000
    g = torch.Generator().manual_seed(100 + seed)
    samples = rbm.sample_hiddens(v.repeat(n, 1, 1), generator=g)  # (n, 3, 4)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    p = rbm.mean_hiddens(v).detach()
    tol = 5 * torch.sqrt(p * (1 - p) / n) + 1e-3
    assert torch.all((samples.mean(0) - p).abs() < tol)


def test_sample_visibles_moments() -> None:
    n = 20000
    h = enumerate_bits(3)[[1, 5, 6]]
    g = torch.Generator().manual_seed(7)
    bern = make_rbm("bernoulli", 5, 3, seed=8)
    s = bern.sample_visibles(h.repeat(n, 1, 1), generator=g)
    p = bern.mean_visibles(h).detach()
    assert torch.all((s.mean(0) - p).abs() < 5 * torch.sqrt(p * (1 - p) / n) + 1e-3)
    gauss = make_rbm("gaussian", 5, 3, seed=9)
    s = gauss.sample_visibles(h.repeat(n, 1, 1), generator=g).detach()
    mean, sigma = gauss.mean_visibles(h).detach(), gauss.sigma.detach()
    assert torch.all((s.mean(0) - mean).abs() < 5 * sigma / math.sqrt(n))
    # std of the sample std of a normal is ~ sigma / sqrt(2n)
    assert torch.all((s.std(0) - sigma).abs() < 5 * sigma / math.sqrt(2 * n))


def test_gibbs_chain_converges_to_exact_marginal() -> None:
    rbm = make_rbm("bernoulli", 3, 2, seed=12)
    v_all = enumerate_bits(3)
    with torch.no_grad():
        log_pv = -rbm.free_energy(v_all)
        p_v = torch.exp(log_pv - torch.logsumexp(log_pv, 0))
    n = 20000
    g = torch.Generator().manual_seed(13)
    start = torch.zeros(n, 3, dtype=torch.float64)
    state = rbm.gibbs_vhv(start, k=25, generator=g)
    assert isinstance(state, GibbsState)
    assert state.v.shape == (n, 3) and state.h.shape == (n, 2) and not state.v.requires_grad
    codes = (state.v * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)).sum(1).long()
    freq = torch.bincount(codes, minlength=8).double() / n
    assert torch.all((freq - p_v).abs() < 5 * torch.sqrt(p_v * (1 - p_v) / n) + 1e-3)
    # the returned means belong to the returned samples
    torch.testing.assert_close(state.v_mean, rbm.mean_visibles(state.h).detach())
    torch.testing.assert_close(state.h_mean.shape, state.h.shape)


def test_gibbs_rejects_nonpositive_k() -> None:
    with pytest.raises(ValueError):
        make_rbm("bernoulli", 3, 2).gibbs_vhv(torch.zeros(1, 3, dtype=torch.float64), k=0)


# ----------------------------------------------------------------------------- learning signals
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_cd_loss_gradient_is_expectation_difference(kind: str, seed: int) -> None:
    rbm = make_rbm(kind, 6, 4, seed=seed)
    v_data = random_visibles(kind, 9, 6, seed=20 + seed)
    v_model = random_visibles(kind, 7, 6, seed=40 + seed).requires_grad_(True)
    rbm.zero_grad()
    rbm.cd_loss(v_data, v_model).backward()
    assert v_model.grad is None  # negative samples are treated as constants
    with torch.no_grad():
        if kind == "bernoulli":
            s_d, s_m = v_data, v_model
            db = v_data.mean(0) - v_model.mean(0)
        else:
            var = rbm.sigma**2
            s_d, s_m = v_data / var, v_model / var
            db = ((v_data - rbm.b) / var).mean(0) - ((v_model - rbm.b) / var).mean(0)
        p_d, p_m = rbm.mean_hiddens(v_data), rbm.mean_hiddens(v_model)
        dW = s_d.T @ p_d / len(v_data) - s_m.T @ p_m / len(v_model)  # <s(v) p(h|v)'>_data - <.>_model
        dc = p_d.mean(0) - p_m.mean(0)
    torch.testing.assert_close(-rbm.W.grad, dW)
    torch.testing.assert_close(-rbm.b.grad, db)
    torch.testing.assert_close(-rbm.c.grad, dc)
    if kind == "gaussian":
        # dF/dlog(sigma_i) = -(v_i - b_i)^2 / sigma_i^2 + 2 v_i (W p(h|v))_i / sigma_i^2
        with torch.no_grad():
            var = rbm.sigma**2

            def dF(v: torch.Tensor) -> torch.Tensor:
                return (-(v - rbm.b) ** 2 / var + 2 * v * (rbm.mean_hiddens(v) @ rbm.W.T) / var).mean(0)

            expected = dF(v_data) - dF(v_model)
        torch.testing.assert_close(rbm.log_sigma.grad, expected)


def test_sigma_is_parameter_only_when_learned() -> None:
    learned = GaussianBernoulliRBM(3, 2, sigma=0.5, learn_sigma=True)
    fixed = GaussianBernoulliRBM(3, 2, sigma=torch.tensor([0.5, 1.0, 2.0]), learn_sigma=False)
    assert "log_sigma" in dict(learned.named_parameters())
    assert "log_sigma" not in dict(fixed.named_parameters()) and "log_sigma" in dict(fixed.named_buffers())
    torch.testing.assert_close(fixed.sigma, torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError):
        GaussianBernoulliRBM(3, 2, sigma=0.0)


def test_init_visible_bias_gives_data_marginals() -> None:
    g = torch.Generator().manual_seed(3)
    p_true = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    x = torch.bernoulli(p_true.expand(400, 5), generator=g)
    rbm = BernoulliRBM(5, 4, weight_std=0.0)
    rbm.init_visible_bias_from_data(x, eps=1e-3)
    expected = x.mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(rbm.mean_visibles(torch.zeros(1, 4))[0], expected, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(rbm.b).all()
    gauss = GaussianBernoulliRBM(2, 3)
    xg = torch.randn(500, 2, generator=g) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -3.0])
    gauss.init_visible_bias_from_data(xg, init_sigma=True)
    torch.testing.assert_close(gauss.b.detach(), xg.mean(0))
    torch.testing.assert_close(gauss.sigma, xg.std(0))


def test_reconstruction_error_is_one_mean_field_pass() -> None:
    rbm = make_rbm("bernoulli", 6, 4, seed=6)
    v = random_visibles("bernoulli", 10, 6)
    with torch.no_grad():
        recon = torch.sigmoid(torch.sigmoid(v @ rbm.W + rbm.c) @ rbm.W.T + rbm.b)
    torch.testing.assert_close(rbm.reconstruction_error(v), ((v - recon) ** 2).mean())


def test_pseudo_log_likelihood_is_exact_conditional() -> None:
    rbm = make_rbm("bernoulli", 5, 3, seed=14)
    v_all = enumerate_bits(5)
    with torch.no_grad():
        log_pv = -rbm.free_energy(v_all)
    v = v_all[[3, 10, 17, 30]]
    for i in range(5):
        pll = rbm.pseudo_log_likelihood(v, flip_index=torch.full((4,), i))
        codes = (v * 2.0 ** torch.arange(5)).sum(1).long()
        flipped = codes ^ (1 << i)
        # log p(v_i | v_-i) = log p(v) - log(p(v) + p(v with bit i flipped))
        cond = log_pv[codes] - torch.logaddexp(log_pv[codes], log_pv[flipped])
        torch.testing.assert_close(pll, 5 * cond)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pseudo_log_likelihood_matches_sklearn(seed: int) -> None:
    from sklearn.neural_network import BernoulliRBM as SkRBM

    rbm = make_rbm("bernoulli", 8, 5, seed=seed)
    v = random_visibles("bernoulli", 20, 8, seed=seed)
    sk = SkRBM(n_components=5, random_state=seed)
    sk.components_ = rbm.W.detach().T.numpy().copy()
    sk.intercept_hidden_ = rbm.c.detach().numpy().copy()
    sk.intercept_visible_ = rbm.b.detach().numpy().copy()
    sk.n_features_in_ = 8
    # scikit-learn flips bit rng.randint(0, D, N) with rng = RandomState(random_state)
    flip = torch.from_numpy(np.random.RandomState(seed).randint(0, 8, 20))
    ours = rbm.pseudo_log_likelihood(v, flip_index=flip).detach().numpy()
    np.testing.assert_allclose(ours, sk.score_samples(v.numpy()), rtol=1e-10)
    np.testing.assert_allclose(rbm.free_energy(v).detach().numpy(), sk._free_energy(v.numpy()), rtol=1e-10)
    # the random version is one of the D exact conditionals per example
    random_pll = rbm.pseudo_log_likelihood(v, generator=torch.Generator().manual_seed(seed))
    all_pll = torch.stack([rbm.pseudo_log_likelihood(v, flip_index=torch.full((20,), i)) for i in range(8)], 1)
    assert torch.all(torch.isclose(random_pll[:, None], all_pll).any(1))

"""Tests of :mod:`lightning_gm.nn.rbm` against enumeration, numerical integration and hand-derived formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM, GibbsState, bernoulli, uniform, with_gradients
from lightning_gm.nn.ssrbm import SpikeSlabRBMNet
from lightning_gm.nn.subspace_rbm import SubspaceRBMNet

KINDS = ["bernoulli", "gaussian"]


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


@pytest.mark.parametrize("kind", KINDS)
def test_fused_cd_step_equals_the_plain_one(kind: str) -> None:
    """Reusing the data's hidden input (the fused CD step of the RBM models) changes neither the chain
    (same draws from the same random stream) nor any gradient."""
    rbm = make_rbm(kind, 6, 4, seed=3)
    v = random_visibles(kind, 9, 6, seed=5)
    plain = rbm.gibbs_vhv(v, k=2, generator=torch.Generator().manual_seed(11))
    logits = rbm.hidden_logits(v)
    fused = rbm.gibbs_vhv(v, k=2, generator=torch.Generator().manual_seed(11), hidden_logits=logits)
    for a, b in zip(plain, fused):
        torch.testing.assert_close(a, b)
    grads = []
    for data_logits in (None, logits):
        rbm.zero_grad()
        rbm.cd_loss(v, plain.v, data_logits=data_logits).backward(retain_graph=True)
        grads.append([p.grad.clone() for p in rbm.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(rbm.reconstruction_error(v, hidden_probs=torch.sigmoid(logits)),
                               rbm.reconstruction_error(v))


@pytest.mark.parametrize("weight_cost, sparsity_cost", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.7), (0.2, 0.5)])
def test_closed_form_cd_loss_equals_autograd_of_the_surrogate(weight_cost: float, sparsity_cost: float) -> None:
    """The binary RBM's written-out CD gradients (and value) equal autograd of the CD surrogate plus
    the weight-cost and sparsity terms of the RBM models."""
    from lightning_gm.models.rbm import sparsity_penalty

    rbm = make_rbm("bernoulli", 6, 4, seed=7)
    v = random_visibles("bernoulli", 9, 6, seed=8)
    v_model = random_visibles("bernoulli", 5, 6, seed=9)
    running_q = torch.rand(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = 0.1
    rbm.zero_grad()
    logits = rbm.hidden_logits(v)
    ref = rbm.cd_loss(v, v_model, data_logits=logits) + 0.5 * weight_cost * rbm.W.pow(2).sum()
    if sparsity_cost:
        ref = ref + sparsity_penalty(logits, running_q, target, sparsity_cost)
    ref.backward()
    expected = [p.grad.clone() for p in rbm.parameters()]
    rbm.zero_grad()
    sparsity = (running_q - target, sparsity_cost) if sparsity_cost else None
    loss = rbm.cd_loss_closed_form(v, v_model, logits.detach(), weight_cost=weight_cost, sparsity=sparsity)
    loss.backward()
    torch.testing.assert_close(loss, ref.detach())
    for p, g in zip(rbm.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_with_gradients_scales_by_the_incoming_gradient() -> None:
    w = torch.zeros(3, requires_grad=True)
    out = with_gradients(torch.tensor(2.0), [w], [torch.tensor([1.0, -2.0, 3.0])])
    (4.0 * out).backward()
    assert float(out) == 2.0 and w.grad.tolist() == [4.0, -8.0, 12.0]
    with pytest.raises(ValueError, match="1 parameters but 2 gradients"):
        with_gradients(torch.tensor(0.0), [w], [w, w])


def test_bernoulli_sampler_has_the_right_law() -> None:
    p = torch.tensor([0.0, 0.03, 0.5, 0.97, 1.0], dtype=torch.float64).expand(200_000, 5)
    x = bernoulli(p, torch.Generator().manual_seed(0))
    assert x.dtype == p.dtype and set(x.unique().tolist()) <= {0.0, 1.0}
    assert x[:, 0].sum() == 0 and x[:, 4].sum() == len(x)  # p = 0 and p = 1 are exact
    se = (p[0] * (1 - p[0]) / len(x)).sqrt()
    assert ((x.mean(0) - p[0]).abs() <= 5 * se + 1e-12).all()
    # independent coordinates: the correlation between columns 1-3 is ~0
    corr = torch.corrcoef(x[:, 1:4].T)
    assert (corr - torch.eye(3, dtype=corr.dtype)).abs().max() < 0.02


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


def test_uniform_is_reproducible_from_the_generator_state_and_uniform_in_law() -> None:
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    a, b = uniform((300, 400), g), uniform((300, 400), g)
    assert not torch.equal(a, b)  # the generator advanced: consecutive draws are new
    g.set_state(state)  # a checkpointed generator state replays the same draws
    assert torch.equal(uniform((300, 400), g), a)
    # U[0, 1): mean 1/2 and variance 1/12 within 5 standard errors, and the deciles are even
    x = torch.cat([a.flatten(), b.flatten()]).double()
    n = x.numel()
    assert 0.0 <= float(x.min()) and float(x.max()) < 1.0
    assert abs(float(x.mean()) - 0.5) < 5 * (1 / 12 / n) ** 0.5
    assert abs(float(x.var()) - 1 / 12) < 5 * (1 / 180 / n) ** 0.5
    counts = torch.histc(x, bins=10, min=0.0, max=1.0)
    chi2 = float(((counts - n / 10) ** 2 / (n / 10)).sum())
    assert chi2 < 35.0  # 9 degrees of freedom: P(chi2 > 35) < 1e-4
    # float64 draws carry more than float32's 24 random bits
    d = uniform((200, 200), g, torch.float64)
    assert d.dtype == torch.float64 and bool(((d * 2**24) % 1 != 0).any())


def test_uniform_falls_back_to_torch_for_small_requests_and_other_dtypes() -> None:
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(uniform((10, 10), g1), torch.rand((10, 10), generator=g2))
    h = uniform((100, 100), g1, torch.bfloat16)
    assert h.dtype == torch.bfloat16 and torch.equal(h, torch.rand((100, 100), generator=g2, dtype=torch.bfloat16))
    # a large float32 request takes the NumPy path: other numbers than torch's from the same state
    assert not torch.equal(uniform((300, 400), g1), torch.rand((300, 400), generator=g2))


# ---------------------------------------------------------------------------- the shared base of the RBM-family nets


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BernoulliRBM(0, 3), "n_visible, n_hidden must be >= 1, got 0, 3"),
        (lambda: SubspaceRBMNet(4, 2, 0), "n_visible, n_gates, subspace_size must be >= 1, got 4, 2, 0"),
        (lambda: SpikeSlabRBMNet(5, 0), "n_visible, n_hidden must be >= 1, got 5, 0"),
    ],
)
def test_coupled_units_name_the_count_below_one(build, message) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        build()


def test_coupled_units_draw_the_weights_in_the_requested_dtype_with_zero_biases() -> None:
    torch.manual_seed(0)
    net = SubspaceRBMNet(300, 20, 5, weight_std=0.5, dtype=torch.float64)
    assert net.W.shape == (300, 20, 5) and net.W.dtype == torch.float64
    assert abs(net.W.std().item() - 0.5) < 0.01  # N(0, 0.5^2) over 30,000 draws: std error ~0.002
    assert all(p.abs().sum() == 0 for p in (net.b, net.c, net.A)) and net.A.dtype == torch.float64
    assert (net.n_visible, net.n_gates, net.n_hidden, net.subspace_size) == (300, 20, 20, 5)


@pytest.mark.parametrize("learn", [True, False])
def test_spike_slab_learn_flags_choose_parameter_or_buffer(learn: bool) -> None:
    net = SpikeSlabRBMNet(3, 2, visible_precision=2.0, phi=0.5, learn_visible_precision=learn, learn_phi=not learn)
    params, buffers = dict(net.named_parameters()), dict(net.named_buffers())
    assert ("lambda_raw" in params, "lambda_raw" in buffers) == (learn, not learn)
    assert ("phi_raw" in params, "phi_raw" in buffers) == (not learn, learn)
    torch.testing.assert_close(net.visible_precision, torch.full((3,), 2.0))
    assert set(net.state_dict()) >= {"lambda_raw", "phi_raw"}

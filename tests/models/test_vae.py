"""The VAE's maths against exact answers: analytic KL, a linear-Gaussian model's exact marginal."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators import importance_weighted_log_prob
from lightning_gm.models import VAE
from lightning_gm.models.vae import kl_warmup_weight
from lightning_gm.nn import GaussianLikelihood
from lightning_gm.nn.distributions import kl_normal_std_normal, log_normal_diag, log_standard_normal, reparameterize


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, log_var = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    z = reparameterize(mu, log_var, n=200_000)
    diff = log_normal_diag(z, mu, log_var) - log_standard_normal(z)  # (n, 4)
    mc, se = diff.mean(0), diff.std(0) / math.sqrt(diff.shape[0])
    exact = kl_normal_std_normal(mu, log_var)
    assert ((mc - exact).abs() < 5 * se).all(), (mc, exact, se)
    assert torch.allclose(kl_normal_std_normal(torch.zeros(3), torch.zeros(3)), torch.tensor(0.0))


def _linear_gaussian_vae(D: int = 5, L: int = 2, sigma: float = 0.5) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """A VAE whose decoder is linear with orthogonal columns, so p(x) and p(z|x) are known exactly:
    p(x) = N(b, W W' + s^2 I), p(z|x) = N(M^-1 W'(x - b)/s^2, M^-1), M = I + W'W/s^2 (diagonal)."""
    torch.manual_seed(1)
    vae = VAE(data_shape=(D,), latent_dim=L, hidden=(), likelihood=GaussianLikelihood(learn_variance=False, sigma=sigma))
    vae = vae.double()
    q, _ = torch.linalg.qr(torch.randn(D, L, dtype=torch.float64))
    W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:L]
    b = torch.randn(D, dtype=torch.float64)
    dec = vae.decoder[0]
    dec.weight.data.copy_(W), dec.bias.data.copy_(b)
    M = torch.eye(L, dtype=torch.float64) + W.T @ W / sigma**2
    post_cov = torch.linalg.inv(M)
    enc = vae.encoder[0]
    enc.weight.data.zero_(), enc.bias.data.zero_()
    enc.weight.data[:L] = post_cov @ W.T / sigma**2
    enc.bias.data[:L] = -(post_cov @ W.T @ b) / sigma**2
    enc.bias.data[L:] = torch.log(torch.diagonal(post_cov))
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(D, dtype=torch.float64))
    x = marginal.sample((256,))
    return vae, x, marginal.log_prob(x)


def test_exact_posterior_makes_every_weight_equal_log_px():
    vae, x, exact = _linear_gaussian_vae()
    lw = vae.log_weights(x, 7)  # (7, 256)
    assert torch.allclose(lw, exact.expand(7, -1), atol=1e-9)
    assert torch.allclose(vae.iw_log_prob(x, 3), exact, atol=1e-9)


def test_iw_bound_rises_with_k_towards_exact_log_px():
    vae, x, exact = _linear_gaussian_vae()
    with torch.no_grad():  # a worse encoder: shifted means, too-wide variances
        vae.encoder[0].bias.data[:2] += 0.4
        vae.encoder[0].bias.data[2:] += 0.7
    gaps = [(exact - vae.iw_log_prob(x, k)).mean().item() for k in (1, 10, 5000)]
    # E[L_1] <= E[L_10] <= E[L_5000] <= log p(x); the first gap is the KL(q || p(z|x)), over a nat here
    assert gaps[0] > gaps[1] > gaps[2] and gaps[0] > 1.0, gaps
    assert abs(gaps[2]) < 0.01, gaps
    # the single-sample bound is the ELBO: its expectation is the analytic ELBO, which sits below log p(x)
    est = importance_weighted_log_prob(vae.log_weights, x, 20000, chunk_size=1000)
    assert (est.elbo < exact).all() and (est.log_prob - exact).mean() < 0.01


def test_chunked_equals_unchunked():
    vae, x, _ = _linear_gaussian_vae()
    with torch.no_grad():
        vae.encoder[0].bias.data[:2] += 0.5
    torch.manual_seed(5)
    whole = importance_weighted_log_prob(vae.log_weights, x, 300)
    torch.manual_seed(5)
    chunked = importance_weighted_log_prob(vae.log_weights, x, 300, chunk_size=7)
    assert torch.allclose(whole.log_prob, chunked.log_prob, atol=1e-10)
    assert torch.allclose(whole.elbo, chunked.elbo, atol=1e-10)


def test_loss_terms_are_consistent():
    torch.manual_seed(0)
    vae = VAE(data_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
    x = torch.bernoulli(torch.full((10, 1, 8, 8), 0.3))
    t = vae.loss_terms(x, "val")
    assert torch.allclose(t["elbo"], t["reconstruction"] - t["kl"])
    assert torch.allclose(t["loss"], -t["elbo"])  # beta = 1 and no warm-up
    assert vae.sample(4).shape == (4, 1, 8, 8) and vae.reconstruct(x).shape == x.shape
    assert vae.estimator == "iwae-5000"


def test_kl_warmup_weight():
    for step, expected in ((0, 0.0), (5, 0.125), (10, 0.25), (20, 0.5), (40, 0.5)):
        assert kl_warmup_weight(0.5, 2, step, 10) == pytest.approx(expected)
    assert kl_warmup_weight(0.7, 0, 3, 10) == 0.7

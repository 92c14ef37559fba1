"""The linear-Gaussian maths against exact answers: the multivariate normal density, the PPCA closed form
against a numerical optimum, EM's monotone ascent, streaming moments, Gaussian conditioning."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.nn import linear_gaussian as lg

DT = torch.float64


def _model(D: int, L: int, seed: int, isotropic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, L, generator=g, dtype=DT)
    mu = torch.randn(D, generator=g, dtype=DT)
    psi = torch.full((D,), 0.3, dtype=DT) if isotropic else 0.05 + torch.rand(D, generator=g, dtype=DT)
    return W, mu, psi


def _data(D: int, L: int, n: int, seed: int) -> torch.Tensor:
    W, mu, psi = _model(D, L, seed + 100, isotropic=False)
    return lg.sample(n, W, mu, psi, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("D,L", [(5, 1), (7, 3), (12, 4)])
@pytest.mark.parametrize("isotropic", [True, False])
def test_log_marginal_matches_multivariate_normal(D, L, isotropic):
    W, mu, psi = _model(D, L, D + L, isotropic)
    x = 3 * torch.randn(40, D, dtype=DT, generator=torch.Generator().manual_seed(1))
    exact = torch.distributions.MultivariateNormal(mu, W @ W.T + torch.diag(psi)).log_prob(x)
    torch.testing.assert_close(lg.log_marginal(x, W, mu, psi), exact, rtol=0, atol=1e-10)
    # the average over a data set through its moments alone
    m = lg.StreamingMoments.of(x.split(7))
    torch.testing.assert_close(lg.average_log_likelihood(m, W, mu, psi), exact.mean(), rtol=0, atol=1e-10)


def test_streaming_moments_match_torch_cov_far_from_the_origin():
    x = 1e4 + torch.randn(1000, 6, generator=torch.Generator().manual_seed(0), dtype=DT)
    m = lg.StreamingMoments.of(list(x.split(37)))  # uneven batches
    assert m.n == 1000
    torch.testing.assert_close(m.mean, x.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(m.cov, torch.cov(x.T, correction=0), rtol=0, atol=1e-9)


@pytest.mark.parametrize("D,L,seed", [(6, 2, 0), (8, 3, 1), (5, 1, 2)])
def test_ppca_closed_form_is_the_numerical_optimum(D, L, seed):
    x = _data(D, L, 400, seed)
    m = lg.StreamingMoments.of([x])
    W, mu, s2 = lg.ppca_ml(m, L)
    best = lg.average_log_likelihood(m, W, mu, s2.expand(D))
    torch.testing.assert_close(mu, x.mean(0))
    # gradient ascent on the exact log-likelihood from a different, random start
    g = torch.Generator().manual_seed(seed + 7)
    Wg = torch.randn(D, L, generator=g, dtype=DT).requires_grad_()
    mug = torch.randn(D, generator=g, dtype=DT).requires_grad_()
    log_s2 = torch.zeros((), dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([Wg, mug, log_s2], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -lg.log_marginal(x, Wg, mug, log_s2.exp().expand(D)).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    numeric = -closure().item()
    assert numeric == pytest.approx(best.item(), abs=1e-6)
    assert best.item() >= numeric - 1e-8  # the closed form is never beaten
    # same model (W is unique only up to rotation: compare W W' and sigma^2)
    torch.testing.assert_close(Wg.detach() @ Wg.detach().T, W @ W.T, rtol=0, atol=1e-4)
    assert log_s2.exp().item() == pytest.approx(s2.item(), rel=1e-4)
    # sigma^2 is the mean discarded eigenvalue of the sample covariance
    evals = torch.linalg.eigvalsh(m.cov).flip(0)
    assert s2.item() == pytest.approx(evals[L:].mean().item(), rel=1e-12)


@pytest.mark.parametrize("D,L,seed", [(10, 2, 0), (15, 4, 1), (30, 5, 2)])
def test_factor_analysis_em_increases_the_likelihood_monotonically(D, L, seed):
    x = _data(D, L, 300, seed)
    m = lg.StreamingMoments.of([x])
    W, psi = lg.fa_init(m, L)
    W = W + 0.3 * torch.randn(W.shape, dtype=DT, generator=torch.Generator().manual_seed(seed))  # start off the PCA solution
    lls = [lg.average_log_likelihood(m, W, m.mean, psi).item()]
    for _ in range(100):
        W, psi = lg.fa_em_step(m.cov, W, psi)
        lls.append(lg.average_log_likelihood(m, W, m.mean, psi).item())
    steps = torch.tensor(lls).diff()
    assert (steps >= -1e-10).all(), steps.min()
    assert lls[-1] > lls[0] + 0.01
    # EM climbs towards a stationary point of the likelihood: the gradient shrinks by orders of magnitude
    def grad_norm(W: torch.Tensor, psi: torch.Tensor) -> float:
        Wt, pt = W.clone().requires_grad_(), psi.clone().requires_grad_()
        lg.average_log_likelihood(m, Wt, m.mean, pt).backward()
        return torch.cat([Wt.grad.flatten(), pt.grad]).norm().item()

    W0, psi0 = lg.fa_init(m, L)
    W0 = W0 + 0.3 * torch.randn(W0.shape, dtype=DT, generator=torch.Generator().manual_seed(seed))
    assert grad_norm(W, psi) < 0.05 * grad_norm(W0, psi0)


def test_posterior_matches_gaussian_conditioning():
    D, L = 6, 3
    W, mu, psi = _model(D, L, 3, isotropic=False)
    x = torch.randn(5, D, dtype=DT, generator=torch.Generator().manual_seed(2))
    # joint of (z, x): cov [[I, W'], [W, C]]; p(z|x) = N(W' C^-1 (x - mu), I - W' C^-1 W)
    C = W @ W.T + torch.diag(psi)
    mean_ref = (x - mu) @ torch.linalg.solve(C, W)
    cov_ref = torch.eye(L, dtype=DT) - W.T @ torch.linalg.solve(C, W)
    mean, cov = lg.posterior(x, W, mu, psi)
    torch.testing.assert_close(mean, mean_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(cov, cov_ref, rtol=0, atol=1e-10)


def test_samples_have_the_model_covariance():
    D, L = 4, 2
    W, mu, psi = _model(D, L, 5, isotropic=False)
    x = lg.sample(200_000, W, mu, psi, generator=torch.Generator().manual_seed(0))
    C = W @ W.T + torch.diag(psi)
    torch.testing.assert_close(x.mean(0), mu, rtol=0, atol=6 * (C.diagonal().max().sqrt() / 447).item())
    torch.testing.assert_close(torch.cov(x.T), C, rtol=0, atol=0.05 * C.abs().max().item())


def test_ppca_rejects_a_latent_dimension_out_of_range():
    m = lg.StreamingMoments.of([torch.randn(20, 4, dtype=DT)])
    with pytest.raises(ValueError, match=r"latent_dim must be in \[1, 3\]"):
        lg.ppca_ml(m, 4)

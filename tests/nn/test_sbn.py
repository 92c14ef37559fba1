"""The Helmholtz machine's maths against enumeration on tiny networks: the normalised joint, ancestral samples
(chi-square), the importance-weighted estimate and the ELBO, and the wake-sleep / reweighted wake-sleep
gradients against their exact expectations (and the RWS p-gradient against the exact gradient of log p(x))."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators.importance import importance_weighted_log_prob
from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.nn.sbn import HelmholtzMachine, bernoulli_log_prob, bernoulli_sample

D = 4
ARCHS = [(3,), (3, 2), (2, 2, 1)]
SEEDS = [0, 1, 2]


def _net(hidden: tuple[int, ...], seed: int = 0, scale: float = 1.5, q_scale: float = 0.5) -> HelmholtzMachine:
    """A random network: p's parameters ~ N(0, scale^2) (a non-trivial joint), q's ~ N(0, q_scale^2) (a
    broad proposal, so that tens of thousands of samples give a tight importance-weighted estimate)."""
    torch.manual_seed(seed)
    net = HelmholtzMachine(D, hidden).double()
    with torch.no_grad():
        for p in net.generative_parameters():
            p.normal_(0.0, scale)
        for p in net.recognition_parameters():
            p.normal_(0.0, q_scale)
    return net


def _all_x() -> torch.Tensor:
    return enumerate_binary(D)  # (16, 4)


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def _close(estimate: torch.Tensor, exact: torch.Tensor, rel: float) -> None:
    err = (estimate - exact).norm() / exact.norm()
    assert err < rel, f"relative error {err:.4f} >= {rel}"


# --- the model -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden", ARCHS)
def test_enumerated_marginal_is_normalised(hidden) -> None:
    """sum_x p(x) = 1 over all 2^D data vectors: the joint is a normalised directed model."""
    net = _net(hidden)
    total = torch.logsumexp(net.log_prob_enumerate(_all_x()), 0)
    assert abs(float(total)) < 1e-10


@pytest.mark.parametrize("hidden", ARCHS)
def test_log_joint_is_product_of_sigmoid_conditionals(hidden) -> None:
    """log p(x, h) against prod_i s^y (1 - s)^(1-y) written out layer by layer with explicit sigmoids."""
    net = _net(hidden, seed=3)
    torch.manual_seed(7)
    x = torch.bernoulli(torch.full((5, D), 0.5, dtype=torch.float64))
    hs = [torch.bernoulli(torch.full((5, h), 0.5, dtype=torch.float64)) for h in hidden]
    below = [x, *hs[:-1]]
    expected = torch.zeros(5, dtype=torch.float64)
    for y, layer, h in zip(below, net.generative, hs):
        s = torch.sigmoid(h @ layer.weight.T + layer.bias)
        expected += torch.log(s**y * (1 - s) ** (1 - y)).sum(-1)
    s_top = torch.sigmoid(net.top_logits)
    expected += torch.log(s_top**hs[-1] * (1 - s_top) ** (1 - hs[-1])).sum(-1)
    torch.testing.assert_close(net.log_joint(x, hs), expected)
    q_expected = torch.zeros(5, dtype=torch.float64)
    for y, layer, h in zip(below, net.recognition, hs):
        s = torch.sigmoid(y @ layer.weight.T + layer.bias)
        q_expected += torch.log(s**h * (1 - s) ** (1 - h)).sum(-1)
    torch.testing.assert_close(net.log_q(x, hs), q_expected)


def test_bernoulli_log_prob_is_stable_for_saturated_logits() -> None:
    logits = torch.tensor([[800.0, -800.0]], dtype=torch.float64)
    assert float(bernoulli_log_prob(torch.tensor([[1.0, 0.0]], dtype=torch.float64), logits)) == 0.0
    assert float(bernoulli_log_prob(torch.tensor([[0.0, 0.0]], dtype=torch.float64), logits)) == -800.0


@pytest.mark.parametrize("seed", SEEDS)
def test_ancestral_samples_match_enumerated_joint(seed: int) -> None:
    """Pearson chi-square of 100,000 ancestral (x, h) samples against p(x, h) over all 2^(D+H) cells
    (cells with expected count < 5 pooled); p-value above 1e-4 for every seed."""
    hidden = (3, 2)
    net = _net(hidden, seed=seed, scale=1.0)
    n = 100_000
    x, hs, _ = net.sample_joint(n, generator=torch.Generator().manual_seed(100 + seed))
    units = torch.cat([x, *hs], -1).long()
    codes = (units << torch.arange(units.shape[1])).sum(-1)
    observed = torch.bincount(codes, minlength=2 ** units.shape[1]).double()
    cells = enumerate_binary(units.shape[1])
    log_p = net.log_joint(cells[:, :D], net.split_hidden(cells[:, D:]))
    expected = n * log_p.exp()
    assert abs(float(expected.sum()) - n) < 1e-6
    big = expected >= 5
    obs = torch.cat([observed[big], observed[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    p_value = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(chi2 / 2)))
    assert p_value > 1e-4, (chi2, df)


def test_per_example_generators_make_samples_batch_independent() -> None:
    net = _net((3, 2))
    x = _all_x()[:5]
    gens = lambda: [torch.Generator().manual_seed(1000 + i) for i in range(5)]  # noqa: E731
    full = net.log_weights(x, 7, gens())
    alone = net.log_weights(x[3:4], 7, [gens()[3]])
    torch.testing.assert_close(full[:, 3:4], alone, rtol=0, atol=0)
    with pytest.raises(ValueError, match="generators"):
        bernoulli_sample(torch.zeros(2, 5, 3), generators=gens()[:2])


def test_enumeration_refuses_large_networks() -> None:
    with pytest.raises(ValueError, match="2\\^30"):
        HelmholtzMachine(D, (10, 20)).log_prob_enumerate(_all_x(), max_units=20)


# --- the importance-weighted estimate --------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hidden", ARCHS)
def test_importance_weighted_estimate_converges_to_enumerated_log_prob(hidden, seed: int) -> None:
    """k = 20,000: the estimate is within 5 of its own standard errors (each < 0.05 nats) of the exact log p(x),
    and the Monte Carlo ELBO of the same samples within 5 standard errors of the enumerated ELBO
    E_q[log p(x, h) - log q(h | x)]; the k = 1 bound lies below log p(x) by the KL gap."""
    net = _net(hidden, seed=seed)
    x = _all_x()
    exact = net.log_prob_enumerate(x)
    torch.manual_seed(seed)
    k = 20_000
    lw = net.log_weights(x, k)  # (k, 16)
    est = torch.logsumexp(lw, 0) - math.log(k)
    w = torch.exp(lw - lw.max(0).values)
    stderr = w.std(0) / (w.mean(0) * math.sqrt(k))  # delta method: sd of log mean w
    assert float(stderr.max()) < 0.05
    assert bool(((est - exact).abs() < 5 * stderr + 1e-9).all()), (est - exact, stderr)

    configs, _ = net.log_posterior_enumerate(x)
    hs_all = net.split_hidden(configs.unsqueeze(1))
    log_q_all = net.log_q(x, hs_all)  # (2^H, 16)
    elbo_exact = (log_q_all.exp() * (net.log_joint(x, hs_all) - log_q_all)).sum(0)
    elbo_mc = lw.mean(0)
    assert bool(((elbo_mc - elbo_exact).abs() < 5 * lw.std(0) / math.sqrt(k)).all())
    assert bool((elbo_exact < exact).all())

    chunked = importance_weighted_log_prob(net.log_weights, x, 2000, chunk_size=300)
    assert chunked.log_prob.shape == (16,) and bool((chunked.elbo <= chunked.log_prob + 1e-12).all())


# --- wake-sleep and reweighted wake-sleep gradients ------------------------------------------------------
def _posterior_samples(net: HelmholtzMachine, x: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    return net.sample_posterior(x, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hidden", [(3,), (3, 2)])
def test_rws_wake_p_gradient_tends_to_exact_log_likelihood_gradient(hidden, seed: int) -> None:
    """-grad_theta of the RWS wake-p surrogate with k = 12,500 against grad_theta of the enumerated
    mean log p(x) (autograd through the exact sum over h): within 5% (Monte Carlo error ~2%; the self-normalised bias is O(1/k))."""
    net = _net(hidden, seed=seed, scale=1.0)
    x = _all_x()
    theta = net.generative_parameters()
    exact = _flat_grad(net.log_prob_enumerate(x).mean(), theta)
    wake = net.wake_losses(x, _posterior_samples(net, x, 12_500, seed), reweight=True)
    _close(-_flat_grad(wake.p_loss, theta), exact, 0.05)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hidden", [(3,), (3, 2)])
def test_rws_wake_q_gradient_tends_to_posterior_expectation(hidden, seed: int) -> None:
    """-grad_phi of the RWS wake-q surrogate tends to sum_h p(h | x) grad_phi log q(h | x) (enumerated)."""
    net = _net(hidden, seed=seed, scale=1.0)
    x = _all_x()
    phi = net.recognition_parameters()
    configs, log_post = net.log_posterior_enumerate(x)
    log_q = net.log_q(x, net.split_hidden(configs.unsqueeze(1)))
    exact = _flat_grad((log_post.exp().detach() * log_q).sum(0).mean(), phi)
    wake = net.wake_losses(x, _posterior_samples(net, x, 12_500, seed), reweight=True)
    _close(-_flat_grad(wake.q_loss, phi), exact, 0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_ws_wake_p_gradient_is_unbiased_for_its_q_expectation(seed: int) -> None:
    """Wake-sleep's wake phase (uniform weights): the average over k samples of grad log p(x, h) against
    the enumerated sum_h q(h | x) grad_theta log p(x, h) (an unbiased estimate, so no k -> inf bias)."""
    net = _net((3, 2), seed=seed, scale=1.0)
    x = _all_x()
    theta = net.generative_parameters()
    configs, _ = net.log_posterior_enumerate(x)
    hs_all = net.split_hidden(configs.unsqueeze(1))
    q = net.log_q(x, hs_all).exp().detach()
    exact = _flat_grad((q * net.log_joint(x, hs_all)).sum(0).mean(), theta)
    wake = net.wake_losses(x, _posterior_samples(net, x, 12_500, seed), reweight=False)
    _close(-_flat_grad(wake.p_loss, theta), exact, 0.05)
    # and it is *not* the gradient of log p(x) when q is not the posterior
    true = _flat_grad(net.log_prob_enumerate(x).mean(), theta)
    assert float((exact - true).norm() / true.norm()) > 0.1


@pytest.mark.parametrize("seed", SEEDS)
def test_sleep_gradient_matches_its_expectation_over_the_joint(seed: int) -> None:
    """-grad_phi of the sleep surrogate over 25,000 dreams against the enumerated
    sum_{x, h} p(x, h) grad_phi log q(h | x) (all 2^(D+H) configurations)."""
    hidden = (3, 2)
    net = _net(hidden, seed=seed, scale=1.0)
    phi = net.recognition_parameters()
    cells = enumerate_binary(D + sum(hidden))
    x, hs = cells[:, :D], net.split_hidden(cells[:, D:])
    p = net.log_joint(x, hs).exp().detach()
    exact = _flat_grad((p * net.log_q(x, hs)).sum(), phi)
    sleep = net.sleep_loss(25_000, generator=torch.Generator().manual_seed(seed))
    _close(-_flat_grad(sleep, phi), exact, 0.05)


def test_each_surrogate_moves_only_its_own_network() -> None:
    """Exact: the p-surrogate has no gradient on phi, the q-surrogates none on theta; RWS with k = 1 is
    the wake-sleep wake phase (the single weight is 1)."""
    net = _net((3, 2))
    x = _all_x()
    hs = _posterior_samples(net, x, 1, 0)
    rws, ws = net.wake_losses(x, hs, reweight=True), net.wake_losses(x, hs, reweight=False)
    theta, phi = net.generative_parameters(), net.recognition_parameters()
    assert float(_flat_grad(rws.p_loss, phi).abs().max()) == 0.0
    assert float(_flat_grad(rws.q_loss, theta).abs().max()) == 0.0
    assert float(_flat_grad(net.sleep_loss(50), theta).abs().max()) == 0.0
    torch.testing.assert_close(rws.p_loss, ws.p_loss, rtol=0, atol=0)
    torch.testing.assert_close(_flat_grad(rws.p_loss, theta), _flat_grad(ws.p_loss, theta), rtol=0, atol=0)

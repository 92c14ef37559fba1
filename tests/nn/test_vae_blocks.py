"""The VAE's building blocks against exact answers: prior densities as explicit mixtures that integrate to 1,
the discretised logistic summing to 1 over the 256 levels, posterior-flow log-dets against autograd
Jacobians, conv network shapes."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.nn import (
    ConvDecoder,
    ConvEncoder,
    DiscretizedLogisticLikelihood,
    IAFPosterior,
    MixtureOfGaussians,
    PlanarPosterior,
    StandardNormal,
    VampPrior,
)
from lightning_gm.nn.mlp import MLP


def _prior(kind: str, dim: int):
    torch.manual_seed(0)
    if kind == "standard":
        p = StandardNormal()
        p.build(dim)
        return p
    if kind == "mog":
        p = MixtureOfGaussians(3, init_std=1.5)
        p.build(dim)
        with torch.no_grad():
            p.log_vars.uniform_(-1, 0.5)
            p.logits.normal_()
        return p
    enc = MLP([5, 8, 2 * dim]).double()
    p = VampPrior(4, init_mean=0.0, init_std=1.0)
    p.build(dim)
    p.bind(lambda u: enc(u).chunk(2, dim=-1), (5,))
    return p


def _explicit_mixture(p, kind: str) -> torch.distributions.Distribution:
    """The same density built from torch.distributions, component by component."""
    if kind == "standard":
        loc = torch.zeros(1, p.latent_dim, dtype=torch.float64)
        comps, weights = (loc, torch.ones_like(loc)), torch.ones(1, dtype=torch.float64)
    elif kind == "mog":
        comps = (p.means, torch.exp(0.5 * p.log_vars))
        weights = torch.softmax(p.logits, 0)
    else:
        mu, log_var = p.components()
        comps, weights = (mu, torch.exp(0.5 * log_var)), torch.ones(p.num_components, dtype=torch.float64)
    normal = torch.distributions.Independent(torch.distributions.Normal(*[c.detach().double() for c in comps]), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=weights.detach().double()), normal)


@pytest.mark.parametrize("kind", ["standard", "mog", "vamp"])
def test_prior_density_is_the_explicit_mixture(kind):
    p = _prior(kind, 3).double()
    z = torch.randn(4, 7, 3, dtype=torch.float64) * 2
    ref = _explicit_mixture(p, kind).log_prob(z)
    torch.testing.assert_close(p.log_prob(z), ref, rtol=0, atol=1e-10)
    assert p.sample(5).shape == (5, 3)


@pytest.mark.parametrize("kind", ["mog", "vamp"])
@pytest.mark.parametrize("dim", [1, 2])
def test_prior_integrates_to_one_on_a_grid(kind, dim):
    p = _prior(kind, dim).double()
    n = 4000 if dim == 1 else 400
    edges = torch.linspace(-12, 12, n + 1, dtype=torch.float64)
    centres, h = (edges[1:] + edges[:-1]) / 2, float(edges[1] - edges[0])
    pts = centres.unsqueeze(-1) if dim == 1 else torch.cartesian_prod(centres, centres)
    mass = torch.exp(torch.logsumexp(p.log_prob(pts), 0)) * h**dim
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_vampprior_gradients_reach_pseudo_inputs_and_encoder():
    enc = MLP([5, 8, 4])
    p = VampPrior(3)
    p.build(2)
    p.bind(lambda u: enc(u).chunk(2, dim=-1), (5,))
    p.log_prob(torch.randn(6, 2)).sum().backward()
    assert p.pseudo_inputs.grad is not None and p.pseudo_inputs.grad.abs().sum() > 0
    assert enc[0].weight.grad is not None
    assert "pseudo_inputs" in dict(p.named_parameters()) and not any("enc" in k for k in p.state_dict())


@pytest.mark.parametrize("dequantized", [True, False])
def test_discretized_logistic_sums_to_one_over_levels(dequantized):
    torch.manual_seed(0)
    lik = DiscretizedLogisticLikelihood(256, dequantized=dequantized).double()
    L = 256
    mu = torch.tensor([-0.2, 0.0, 0.3, 0.5, 0.999, 1.4], dtype=torch.float64)
    log_s = torch.tensor([-6.0, -3.0, -1.0, -4.5, -2.0, 0.5], dtype=torch.float64)
    params = torch.stack([mu, log_s], -1).unsqueeze(1)  # (6, 1, 2): one pixel per row
    k = torch.arange(L, dtype=torch.float64)
    x = (k + 0.5) / L if dequantized else k / (L - 1)  # one point of each level
    lp = lik.log_prob(x.view(L, 1).unsqueeze(0).expand(6, L, 1), params.expand(6, L, 2))  # (6, L)
    if dequantized:  # a density, piecewise constant on the bins of width 1/L: integrates to 1
        assert torch.allclose(torch.logsumexp(lp - math.log(L), -1), torch.zeros(6, dtype=torch.float64), atol=1e-9)
        lp = lp - math.log(L)
    assert torch.allclose(torch.logsumexp(lp, -1), torch.zeros(6, dtype=torch.float64), atol=1e-9)
    # the mass of a level is the CDF difference
    cdf = lambda t: torch.sigmoid((t - mu) * torch.exp(-log_s))  # noqa: E731
    j = 100
    assert torch.allclose(lp[:, j].exp(), cdf(torch.tensor((j + 1) / L)) - cdf(torch.tensor(j / L)), atol=1e-12)
    assert torch.isfinite(lp).all()


def test_discretized_logistic_density_matches_dequantised_bpd():
    """log p(x) on dequantised data minus D ln L is the discrete log-mass, so test/bpd = -log2 P(k) / D."""
    lik = DiscretizedLogisticLikelihood(256)
    params = torch.randn(3, 8)
    x = (torch.randint(0, 256, (3, 4)).float() + torch.rand(3, 4)) / 256
    k = lik.levels(x)
    assert torch.allclose(lik.log_prob(x, params) - 4 * math.log(256), lik.log_mass(k, params).sum(-1), atol=1e-5)


def _jacobian_logdet(flow, z0, ctx):
    out = []
    for b in range(z0.shape[0]):
        f = lambda z: flow(z.unsqueeze(0), None if ctx is None else ctx[b : b + 1])[0][0]  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, z0[b])
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_posterior_flow_logdet_equals_autograd_jacobian(name):
    torch.manual_seed(0)
    d, c = 4, 3
    flow = PlanarPosterior(d, c, num_layers=4) if name == "planar" else IAFPosterior(d, c, num_layers=3, hidden_features=(16,))
    flow = flow.double()
    with torch.no_grad():  # move away from the (near-)identity initialisation
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z0, ctx = torch.randn(5, d, dtype=torch.float64), torch.randn(5, c, dtype=torch.float64)
    zk, ladj = flow(z0, ctx)
    assert zk.shape == z0.shape and ladj.shape == (5,)
    torch.testing.assert_close(ladj, _jacobian_logdet(flow, z0, ctx), rtol=0, atol=1e-9)
    # leading sample dimensions are folded and restored
    zk2, ladj2 = flow(z0.unsqueeze(0).expand(2, 5, d), ctx)
    torch.testing.assert_close(zk2[1], zk)
    torch.testing.assert_close(ladj2[0], ladj)


@pytest.mark.parametrize("num_params", [1, 2])
def test_conv_nets_map_flat_vectors(num_params):
    enc, dec = ConvEncoder(784, 10), ConvDecoder(5, num_params * 784)
    x = torch.rand(3, 784)
    assert enc(x).shape == (3, 10) and enc(x.view(1, 3, 784)).shape == (1, 3, 10)
    assert dec(torch.randn(2, 3, 5)).shape == (2, 3, num_params * 784)
    with pytest.raises(ValueError, match="image_shape"):
        ConvEncoder(64, 10)
    with pytest.raises(ValueError, match=r"^ConvDecoder\.image_shape must be \(C, H, W\), got \[28, 28\]$"):
        ConvDecoder(5, 784, image_shape=(28, 28))
    # channels=None is each class's own default: the encoder widens from the image, the decoder narrows to it
    assert [m.out_channels for m in enc.net if isinstance(m, torch.nn.Conv2d)] == [32, 64]
    assert [m.in_channels for m in dec.net if isinstance(m, torch.nn.ConvTranspose2d)] == [64, 32]


def test_vampprior_bounds_keep_pseudo_inputs_in_range_and_match_hardtanh():
    """bounds=(0, 1) is the reference implementation's Hardtanh(0, 1): the encoder sees clip(u, 0, 1), raw values
    outside the range get no gradient, and however hard the optimiser pushes, the pseudo-inputs stay in [0, 1]."""
    torch.manual_seed(0)
    enc = MLP([5, 8, 4]).double()
    p = VampPrior(6, init_mean=0.5, init_std=1.0, bounds=(0.0, 1.0))
    p.build(2)
    p.bind(lambda u: enc(u).chunk(2, dim=-1), (5,))
    p = p.double()
    raw = p.pseudo_inputs.detach().clone()
    assert (raw < 0).any() and (raw > 1).any()  # the test covers both sides
    torch.testing.assert_close(p.inputs(), raw.clamp(0.0, 1.0), rtol=0, atol=0)
    mu, log_var = p.components()
    ref_mu, ref_lv = enc(raw.clamp(0.0, 1.0)).chunk(2, dim=-1)
    torch.testing.assert_close(mu, ref_mu, rtol=0, atol=0)
    torch.testing.assert_close(log_var, ref_lv, rtol=0, atol=0)
    p.inputs().pow(2).sum().backward()  # d/du of sum(clip(u)^2) = 2 u inside the range, 0 outside
    inside = (raw > 0) & (raw < 1)
    torch.testing.assert_close(p.pseudo_inputs.grad, torch.where(inside, 2 * raw, torch.zeros_like(raw)))
    opt = torch.optim.SGD([p.pseudo_inputs], lr=0.5)
    for sign in (1.0, -1.0):  # push every pseudo-input up, then down, far past the range
        for _ in range(20):
            opt.zero_grad()
            (-sign * p.inputs().sum() - sign * p.components()[0].sum()).backward()
            opt.step()
            u = p.inputs()
            assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0
    # unbounded (the old behaviour): the encoder sees the raw parameters
    q = VampPrior(6, init_mean=0.5, init_std=1.0)
    q.build(2)
    q.bind(lambda u: enc.float()(u).chunk(2, dim=-1), (5,))
    assert q.inputs() is q.pseudo_inputs and float(q.pseudo_inputs.min()) < 0


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5), (0.0,), (0.0, 1.0, 2.0)])
def test_vampprior_rejects_bad_bounds(bounds):
    with pytest.raises(ValueError, match=r"VampPrior.bounds must be \(low, high\) with low < high"):
        VampPrior(3, bounds=bounds)


def test_vampprior_float32_log_prob_matches_the_float64_mixture_with_narrow_components():
    """The matrix-product form of the quadratic term must not lose the density to cancellation in float32, with
    components as narrow as the encoder may make them (log-variances down to -8) and latents near and far."""
    torch.manual_seed(0)
    K, L = 50, 40
    u = torch.randn(K, 7)
    mu, log_var = torch.randn(K, L) * 2, torch.rand(K, L) * -8.0
    table = {tuple(r.tolist()): (m, v) for r, m, v in zip(u, mu, log_var)}
    p = VampPrior(K)
    p.build(L)
    p.bind(lambda x: (torch.stack([table[tuple(r.tolist())][0] for r in x]),
                      torch.stack([table[tuple(r.tolist())][1] for r in x])), (7,))
    with torch.no_grad():
        p.pseudo_inputs.copy_(u)
    near = mu[torch.randint(K, (64,))] + 0.01 * torch.randn(64, L)  # within a fraction of a component's sd
    z = torch.cat([near, torch.randn(64, L) * 3]).view(2, 64, L)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.full((K,), 1.0 / K, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(mu.double(), torch.exp(0.5 * log_var.double())), 1),
    ).log_prob(z.double())
    got = p.log_prob(z)
    assert got.dtype == torch.float32 and got.shape == (2, 64)
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-4)


def test_bernoulli_likelihood_is_the_bernoulli_log_mass_at_every_scale():
    """x.eta - softplus(eta) equals sum_i log Bern(x_i; sigmoid(eta_i)) (float64 reference), for binary and grey x,
    broadcast over samples, with logits from -60 to 60 (no overflow, no cancellation beyond float32 rounding)."""
    from lightning_gm.nn import BernoulliLikelihood

    g = torch.Generator().manual_seed(0)
    eta = torch.cat([torch.randn(3, 4, 50, generator=g) * 5, torch.linspace(-60, 60, 3 * 4 * 10).view(3, 4, 10)], -1)
    for x in (torch.bernoulli(torch.full((4, 60), 0.3), generator=g), torch.rand(4, 60, generator=g)):
        got = BernoulliLikelihood().log_prob(x, eta)
        e, xx = eta.double(), x.double()
        want = (xx * torch.nn.functional.logsigmoid(e) + (1 - xx) * torch.nn.functional.logsigmoid(-e)).sum(-1)
        assert got.shape == (3, 4)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-4)

"""Convolutional RBM with probabilistic max-pooling: block distribution, conditionals and free energy against
brute-force enumeration of the joint on tiny instances (with and without partial boundary blocks)."""

from __future__ import annotations

import pytest
import torch

from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.nn.conv_rbm import ConvolutionalRBM, block_view, unblock

# (in_channels, image, n_filters, filter, pool): even blocks, partial boundary blocks, 2 channels, no pooling
SHAPES = [
    (1, (3, 3), 2, 2, 2),   # 2x2 detectors: one full block per group
    (1, (4, 4), 1, 2, 2),   # 3x3 detectors: full, partial (2x1, 1x2) and corner (1x1) blocks
    (2, (3, 3), 1, 1, 2),   # 2 visible channels, 1x1 filters, 3x3 detectors with boundary blocks
    (1, (3, 3), 1, 2, 1),   # pool 1: an ordinary convolutional RBM (every detector independent)
]


def _model(shape, seed: int, visible: str = "binary") -> ConvolutionalRBM:
    cin, img, k, nw, c = shape
    torch.manual_seed(seed)
    m = ConvolutionalRBM(cin, img, k, nw, c, visible=visible, weight_std=1.0, dtype=torch.float64)
    with torch.no_grad():
        m.b.normal_(0, 1)
        m.c.normal_(0, 1)
    return m


def _valid_hiddens(m: ConvolutionalRBM) -> torch.Tensor:
    """Every detector configuration that respects the pooling constraint, ``(S, K, H_h, W_h)``."""
    h = enumerate_binary(m.n_hidden).reshape(-1, m.n_filters, *m.hidden_size)
    return h[m.valid(h)]


@pytest.mark.parametrize("shape", SHAPES)
def test_block_view_round_trips(shape) -> None:
    m = _model(shape, 0)
    x = torch.randn(3, m.n_filters, *m.hidden_size, dtype=torch.float64)
    assert torch.equal(unblock(block_view(x, m.pool_size), m.pool_size, *m.hidden_size), x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_free_energy_is_enumerated_sum_over_hiddens(shape, seed: int) -> None:
    """F(v) = -log sum_{valid h} exp(-E(v, h)), for every binary v."""
    m = _model(shape, seed)
    hs = _valid_hiddens(m)
    vs = enumerate_binary(m.n_visible).reshape(-1, m.in_channels, *m.image_size)[:: max(1, 2 ** m.n_visible // 64)]
    with torch.no_grad():
        for v in vs:
            brute = -torch.logsumexp(-m.energy(v.expand(len(hs), -1, -1, -1), hs), 0)
            assert torch.allclose(m.free_energy(v[None])[0], brute, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_hidden_conditionals_match_joint(shape) -> None:
    """P(h_ij = 1 | v) and P(p_alpha = 1 | v) from the block softmax equal the enumerated posterior marginals,
    and the block distribution (C^2 + 1 states) sums to one."""
    m = _model(shape, 2)
    hs = _valid_hiddens(m)
    torch.manual_seed(3)
    v = torch.bernoulli(torch.full((4, m.in_channels, *m.image_size), 0.5, dtype=torch.float64))
    with torch.no_grad():
        lp = m.block_log_probs(m.detector_logits(v))
        assert torch.allclose(lp.exp().sum(-1), torch.ones_like(lp[..., 0]), atol=1e-12)
        h_mean, p_mean = m.mean_hiddens(v)
        pool_of = lambda h: (block_view(h, m.pool_size, fill=0.0).sum(-1) > 0).double()  # noqa: E731
        for n in range(len(v)):
            w = torch.softmax(-m.energy(v[n].expand(len(hs), -1, -1, -1), hs), 0)
            assert torch.allclose(h_mean[n], (w[:, None, None, None] * hs).sum(0), atol=1e-10)
            assert torch.allclose(p_mean[n], (w[:, None, None, None] * pool_of(hs)).sum(0), atol=1e-10)
            assert torch.allclose(m.pool_probs(v[n : n + 1])[0], p_mean[n], atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_visible_conditionals_match_joint(shape) -> None:
    """P(v_i = 1 | h) = sigma(c + sum_k W^k * h^k) equals the enumerated conditional of the joint."""
    m = _model(shape, 4)
    hs = _valid_hiddens(m)
    vs = enumerate_binary(m.n_visible).reshape(-1, m.in_channels, *m.image_size)
    with torch.no_grad():
        for h in hs[torch.randperm(len(hs), generator=torch.Generator().manual_seed(0))[:5]]:
            w = torch.softmax(-m.energy(vs, h.expand(len(vs), -1, -1, -1)), 0)
            assert torch.allclose(m.mean_visibles(h[None])[0], (w[:, None, None, None] * vs).sum(0), atol=1e-10)


def test_block_sampler_matches_block_distribution() -> None:
    """Sampled block states: never two detectors on in a block, and frequencies within 5 sigma of the block
    softmax (20,000 draws of a 3x3 detector map with a partial boundary)."""
    m = _model(SHAPES[1], 5)
    v = torch.bernoulli(torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    n = 20000
    h, p = m.sample_hiddens(v.expand(n, -1, -1, -1), torch.Generator().manual_seed(2))
    assert bool(m.valid(h).all())
    assert torch.equal(p, (block_view(h, m.pool_size, fill=0.0).sum(-1) > 0).double())
    h_mean, p_mean = m.mean_hiddens(v)
    for freq, prob in ((h.mean(0), h_mean[0]), (p.mean(0), p_mean[0])):
        sigma = (prob * (1 - prob) / n).sqrt().clamp_min(1e-4)
        assert ((freq - prob).abs() / sigma).max() < 5


def test_gaussian_visibles_conditional_and_free_energy() -> None:
    """Gaussian visibles: E[v | h] is the linear input, and F(v) = -log sum_h e^{-E} still holds."""
    m = _model(SHAPES[0], 6, visible="gaussian")
    hs = _valid_hiddens(m)
    v = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        for x in v:
            brute = -torch.logsumexp(-m.energy(x.expand(len(hs), -1, -1, -1), hs), 0)
            assert torch.allclose(m.free_energy(x[None])[0], brute, atol=1e-10)
        assert torch.allclose(m.mean_visibles(hs[:2]), m.visible_input(hs[:2]))


def test_clamped_pool_gibbs_respects_pooling_states() -> None:
    """With the pooling units clamped, "off" blocks stay off and "on" blocks have exactly one detector on."""
    m = _model(SHAPES[1], 7)
    pool = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64).expand(50, -1, -1, -1)
    state = m.gibbs(torch.zeros(50, 1, 4, 4), k=3, generator=torch.Generator().manual_seed(0), pool_clamp=pool)
    counts = block_view(state.h, m.pool_size, fill=0.0).sum(-1)
    assert torch.equal(counts, pool) and torch.equal(state.p, pool)


@pytest.mark.parametrize("bad", [dict(filter_size=5), dict(pool_size=0), dict(visible="poisson")])
def test_bad_arguments_are_rejected(bad) -> None:
    kw = dict(in_channels=1, image_size=(4, 4), n_filters=2, filter_size=2, pool_size=2) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        ConvolutionalRBM(**kw)

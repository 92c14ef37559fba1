"""PixelCNN decoders against exact answers: the masks' zero patterns, the autograd Jacobian's causal
(and, for the gated stacks, blind-spot-free) structure, one-pass log p(x|c) against the sampler's
step-by-step conditionals, normalisation by enumeration, and the sampler's conditionals."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lightning_gm.nn import PixelCNN, PixelCNNLikelihood
from lightning_gm.nn.pixelcnn import causal_mask


def _strict_lower(d: int) -> torch.Tensor:
    """``[j < i]``: the pixels output ``i`` may (and, without blind spot, does) depend on, raster order."""
    return torch.ones(d, d).tril(-1).bool()


@pytest.mark.parametrize(
    "mask_type,expected",
    [("A", [[1, 1, 1], [1, 0, 0], [0, 0, 0]]), ("B", [[1, 1, 1], [1, 1, 0], [0, 0, 0]])],
)
def test_mask_pattern(mask_type, expected):
    assert torch.equal(causal_mask(3, mask_type), torch.tensor(expected, dtype=torch.float32))
    m5 = causal_mask(5, mask_type)
    assert m5.sum().item() == 12 + (mask_type == "B")  # two full rows + 2 (or 3) centre-row entries


def _jacobian(net: PixelCNN, h: int, w: int, cond_channels: int) -> torch.Tensor:
    torch.manual_seed(3)
    x = torch.rand(h * w, dtype=torch.float64)
    cond = torch.randn(1, cond_channels, h, w, dtype=torch.float64) if cond_channels else None
    return torch.autograd.functional.jacobian(lambda a: net(a.view(1, 1, h, w), cond).flatten(), x)


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("first_kernel_size,kernel_size,cond_channels", [(3, 3, 0), (5, 3, 2), (7, 5, 1)])
def test_jacobian_is_causal(gated, first_kernel_size, kernel_size, cond_channels):
    """d eta_i / d x_j is exactly zero for every j >= i (raster order), whatever the weights."""
    torch.manual_seed(0)
    h, w = 5, 6
    net = PixelCNN(channels=4, n_layers=4, kernel_size=kernel_size, first_kernel_size=first_kernel_size,
                   cond_channels=cond_channels, gated=gated, head_channels=5).double()
    jac = _jacobian(net, h, w, cond_channels)
    assert jac.shape == (h * w, h * w)
    assert (jac[~_strict_lower(h * w)] == 0).all()
    assert (jac.abs().sum(1)[1:] > 0).all()  # every pixel but the first sees something


def test_gated_stacks_have_no_blind_spot_but_the_masked_stack_has():
    """With enough layers the gated PixelCNN's output i depends on *every* j < i; the plain masked stack
    misses pixels up and to the right (the blind spot of van den Oord et al. 2016b, Fig. 1)."""
    torch.manual_seed(0)
    h = w = 5
    lower = _strict_lower(h * w)
    for gated, blind_spot in ((True, False), (False, True)):
        net = PixelCNN(channels=4, n_layers=5, kernel_size=3, first_kernel_size=3, gated=gated).double()
        seen = _jacobian(net, h, w, 0) != 0
        assert not (seen & ~lower).any()
        assert bool((~seen & lower).any()) is blind_spot
    # the blind pixel of the masked stack: output (1, 0) never sees input (0, 2)
    net = PixelCNN(channels=4, n_layers=5, kernel_size=3, first_kernel_size=3, gated=False).double()
    assert _jacobian(net, h, w, 0)[1 * w + 0, 0 * w + 2] == 0


def _likelihood(gated: bool, cond_channels: int = 2) -> PixelCNNLikelihood:
    torch.manual_seed(1)
    return PixelCNNLikelihood(cond_channels=cond_channels, channels=6, n_layers=3, kernel_size=3,
                              first_kernel_size=3, gated=gated, head_channels=8).double()


@pytest.mark.parametrize("gated", [True, False])
def test_one_pass_log_prob_equals_the_samplers_step_by_step_conditionals(gated):
    """log p(x|c) from one pass = sum_i log p(x_i | x_<i, c) read off the sampler's loop (teacher-forced),
    with random garbage in the not-yet-generated pixels (so any leak from the future would show)."""
    lik = _likelihood(gated)
    torch.manual_seed(2)
    n, d = 4, 4 * 5
    lik.image_shape = (1, 4, 5)
    params = torch.randn(n, 2 * d, dtype=torch.float64)
    x = torch.bernoulli(torch.full((n, d), 0.4, dtype=torch.float64))
    garbage = torch.rand(n, d, dtype=torch.float64) * 3
    filled, step_logits = lik.autoregress(params, lambda i, eta: x[:, i], canvas=garbage)
    assert torch.equal(filled, x)
    assert torch.allclose(step_logits, lik.logits(x, params), atol=1e-10)
    per_pixel = x * step_logits - torch.nn.functional.softplus(step_logits)
    assert torch.allclose(lik.log_prob(x, params), per_pixel.sum(-1), atol=1e-10)


@pytest.mark.parametrize("gated", [True, False])
def test_conditional_is_normalised_by_enumeration(gated):
    """sum over all 2^9 binary 3x3 images of p(x|c) is exactly 1 for every c (and broadcasting x over a
    leading sample dimension of params gives the same numbers)."""
    lik = _likelihood(gated)
    torch.manual_seed(4)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.float64)  # (512, 9)
    params = torch.randn(3, 1, 2 * 9, dtype=torch.float64) * 2  # 3 conditionings, broadcast over images
    lp = lik.log_prob(images, params.expand(3, 512, 18))  # (3, 512)
    assert torch.allclose(torch.logsumexp(lp, -1), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    one = lik.log_prob(images[:5], params[1].expand(5, 18))
    assert torch.allclose(one, lp[1, :5], atol=1e-12)


@pytest.mark.parametrize("gated", [True, False])
def test_sampler_conditionals_match_the_model(gated):
    """First pixel: the fraction of ones among N samples matches sigmoid(eta_1(c)); second pixel: its
    frequency given the first matches sigmoid(eta_2(x_1, c)) for both values of x_1 (5-sigma binomial)."""
    lik = _likelihood(gated, cond_channels=1)
    with torch.no_grad():
        lik.net.head[-1].bias.fill_(0.3)  # keep the probabilities away from 0/1 so both branches occur
    n = 6000
    c = torch.randn(1, 9, dtype=torch.float64) * 0.5
    gen = torch.Generator().manual_seed(5)
    x = lik.sample(c.expand(n, 9), generator=gen)
    assert x.shape == (n, 9) and set(x.unique().tolist()) <= {0.0, 1.0}

    def check(freq_of: torch.Tensor, prob: float) -> None:
        m = freq_of.numel()
        assert m > 200
        se = math.sqrt(prob * (1 - prob) / m)
        assert abs(freq_of.mean().item() - prob) < 5 * se, (freq_of.mean().item(), prob)

    for x1 in (0.0, 1.0):
        probe = torch.zeros(1, 9, dtype=torch.float64)
        probe[0, 0] = x1
        p = torch.sigmoid(lik.logits(probe, c))[0]
        if x1 == 0.0:
            check(x[:, 0], p[0].item())  # eta_1 does not depend on any pixel
        check(x[x[:, 0] == x1, 1], p[1].item())


def test_mean_is_the_probability_path_of_a_sample():
    """``mean`` returns sigmoid of the logits the sampler read, which lie in (0, 1) and are what one pass
    on the corresponding sample gives."""
    lik = _likelihood(True, cond_channels=1)
    c = torch.randn(3, 16, dtype=torch.float64)
    torch.manual_seed(7)
    probs = lik.mean(c)
    torch.manual_seed(7)
    xs = lik.sample(c)
    assert torch.allclose(probs, torch.sigmoid(lik.logits(xs, c)), atol=1e-10)


@pytest.mark.parametrize(
    "kwargs,dim,needle",
    [({}, 10, "image_shape"), ({"image_shape": (1, 3, 4)}, 13, "image_shape"), ({"kernel_size": 4}, 16, "odd"),
     ({"cond_channels": 0}, 16, "cond_channels"), ({"image_shape": (3, 4, 4)}, 48, "(1, H, W)")],
)
def test_clear_config_errors(kwargs, dim, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        PixelCNNLikelihood(**kwargs).num_params(dim)


@pytest.mark.parametrize("gated", [True, False])
def test_shipped_architecture_is_causal_on_28x28(gated):
    """The conf/vae_pixelcnn.yaml network (4 layers x 16 channels, 7x7 then 3x3) on a full MNIST image: the
    784 x 784 Jacobian is exactly zero on and above the diagonal (raster order)."""
    torch.manual_seed(0)
    net = PixelCNN(channels=16, n_layers=4, kernel_size=3, first_kernel_size=7, cond_channels=1, gated=gated,
                   head_channels=32).double()
    jac = _jacobian(net, 28, 28, 1)
    assert (jac[~_strict_lower(784)] == 0).all()
    assert (jac.abs().sum(1)[1:] > 0).all()

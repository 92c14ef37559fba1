"""Networks' initialisation schemes against their formulas (fan_in / fan_out), gated dense units against their
definition and finite differences, bounded log-variances."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_gm.models import VAE
from lightning_gm.nn import ConvDecoder, ConvEncoder, MLPNet
from lightning_gm.nn.mlp import INITS, MLP, GatedLinear, bounded, init_linear_


def _expected_var(scheme: str, fan_in: int, fan_out: int) -> float:
    return {
        "torch": 1.0 / (3 * fan_in),  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5))
        "xavier_uniform": 2.0 / (fan_in + fan_out),
        "xavier_normal": 2.0 / (fan_in + fan_out),
        "he_normal": 2.0 / fan_in,
        "he_uniform": 2.0 / fan_in,
    }[scheme]


LAYERS = {
    # layer, fan_in, fan_out, PyTorch's own fan_in (for a transposed convolution torch takes the weight's second
    # axis, out_channels * kernel area, as its fan_in; the schemes here use the inputs each output sums over)
    "linear": (lambda: nn.Linear(700, 300), 700, 300, 700),
    "conv": (lambda: nn.Conv2d(16, 64, 5), 16 * 25, 64 * 25, 16 * 25),
    "conv_transpose": (lambda: nn.ConvTranspose2d(64, 16, 4), 64 * 16, 16 * 16, 16 * 16),
}


@pytest.mark.parametrize("scheme", INITS)
@pytest.mark.parametrize("kind", list(LAYERS))
def test_weight_variance_matches_the_scheme(scheme, kind):
    build, fan_in, fan_out, torch_fan_in = LAYERS[kind]
    torch.manual_seed(0)
    layer = init_linear_(build(), scheme)
    w = layer.weight.detach().double()
    expected = _expected_var(scheme, torch_fan_in if scheme == "torch" else fan_in, fan_out)
    # > 200,000 weights: the sample variance is within ~0.5% of the true one; 3% separates every pair of schemes here
    assert abs(float(w.var()) / expected - 1) < 0.03
    assert abs(float(w.mean())) < 4 * math.sqrt(expected / w.numel())
    if scheme != "torch":
        assert torch.all(layer.bias == 0)
    else:
        assert float(layer.bias.detach().abs().max()) > 0
    if scheme.endswith("uniform"):  # the uniform schemes' bound sqrt(3 var)
        assert float(w.abs().max()) <= math.sqrt(3 * expected) + 1e-7


@pytest.mark.parametrize("scheme", ["xavier_uniform", "he_normal"])
def test_mlp_and_gated_units_initialise_every_map_with_its_own_fans(scheme):
    torch.manual_seed(1)
    mlp = MLP([784, 300, 300, 80], activation="gated", init=scheme)
    gated = [m for m in mlp if isinstance(m, GatedLinear)]
    assert len(gated) == 2 and isinstance(mlp[-1], nn.Linear)
    for g in gated:
        for w, b in (g.linear, g.gate):  # each half is an in -> out layer: its own fan_out, not 2 * out
            assert abs(float(w.double().var()) / _expected_var(scheme, g.in_features, g.out_features) - 1) < 0.05
            assert torch.all(b == 0)
    out = mlp[-1].weight.double()
    assert abs(float(out.var()) / _expected_var(scheme, 300, 80) - 1) < 0.05


def test_gated_units_compute_their_definition_and_its_gradients():
    torch.manual_seed(2)
    g = GatedLinear(5, 3).double()
    x = torch.randn(2, 4, 5, dtype=torch.double, requires_grad=True)
    (w1, b1), (w2, b2) = g.linear, g.gate
    expected = (x @ w1.T + b1) * torch.sigmoid(x @ w2.T + b2)
    assert g(x).shape == (2, 4, 3)
    torch.testing.assert_close(g(x), expected)
    assert torch.autograd.gradcheck(g, (x,))
    # every parameter gets a gradient, the gate's through the sigmoid's derivative
    g(x).sum().backward()
    h, s = x @ w1.T + b1, torch.sigmoid(x @ w2.T + b2)
    torch.testing.assert_close(g.proj.bias.grad[:3], s.sum((0, 1)))
    torch.testing.assert_close(g.proj.bias.grad[3:], (h * s * (1 - s)).sum((0, 1)))


def test_conv_nets_and_mlpnet_take_the_scheme():
    torch.manual_seed(3)
    enc = ConvEncoder(784, 10, channels=(32, 64), init="he_normal")
    conv = enc.net[0]
    assert abs(float(conv.weight.double().var()) / (2.0 / 9) - 1) < 0.2  # 288 weights: a looser bound
    lin = [m for m in enc.net if isinstance(m, nn.Linear)][0]
    assert abs(float(lin.weight.double().var()) / (2.0 / lin.in_features) - 1) < 0.03
    dec = ConvDecoder(10, 784, init="xavier_normal")
    assert all(torch.all(m.bias == 0) for m in dec.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d)))
    net = MLPNet(784, 100, hidden=(200,), activation="gated", init="he_normal")
    assert isinstance(net[0], GatedLinear) and net(torch.rand(3, 784)).shape == (3, 100)


@pytest.mark.parametrize("build, match", [
    (lambda: MLP([3, 4], init="glorot"), "init must be one of"),
    (lambda: MLP([3, 4, 2], activation="swish"), "activation must be one of"),
    (lambda: ConvEncoder(784, 4, init="kaiming"), "ConvEncoder.init"),
    (lambda: VAE(latent_dim=2, hidden=(8,), init="he"), "model.init_args.init"),
    (lambda: VAE(latent_dim=2, hidden=(8,), log_var_bounds=(2.0, -6.0)), "model.init_args.log_var_bounds"),
])
def test_bad_choices_name_the_key(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_log_variance_bounds_are_respected_and_stop_gradients_outside():
    torch.manual_seed(4)
    vae = VAE(data_shape=(20,), latent_dim=3, hidden=(16,), activation="gated", init="he_normal",
              log_var_bounds=(-6.0, 2.0))
    with torch.no_grad():  # push the raw log-variances far outside [-6, 2] both ways
        last = vae.encoder[-1]
        last.bias[3:6] = torch.tensor([50.0, -50.0, 0.0])
    x = torch.rand(7, 20)
    _, log_var = vae.encode(x)
    assert float(log_var[:, 0].min()) == 2.0 and float(log_var[:, 1].max()) == -6.0
    assert float(log_var.min()) >= -6.0 and float(log_var.max()) <= 2.0
    log_var.sum().backward()
    assert float(last.bias.grad[3]) == 0.0 and float(last.bias.grad[4]) == 0.0 and float(last.bias.grad[5]) != 0.0
    raw = torch.linspace(-10, 10, 21)
    torch.testing.assert_close(bounded(raw, (-6.0, 2.0)), raw.clamp(-6.0, 2.0))
    assert bounded(raw, None) is raw

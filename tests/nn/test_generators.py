"""Generator and discriminator networks: flat in, flat out with any leading dimensions, the output range,
batch norm where asked, and configuration errors that name the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gm.nn.generators import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator

GENERATORS = {
    "mlp": lambda output: MLPGenerator(3, 64, hidden=(16, 16), batch_norm=True, output=output),
    "conv": lambda output: ConvGenerator(3, 64, image_shape=(1, 8, 8), channels=(8, 4), output=output),
}
DISCRIMINATORS = {
    "mlp": lambda: MLPDiscriminator(64, 1, hidden=(16,), dropout=0.1),
    "conv": lambda: ConvDiscriminator(64, 1, image_shape=(1, 8, 8), channels=(4, 8)),
}
RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "identity": (-float("inf"), float("inf"))}


@pytest.mark.parametrize("output", sorted(RANGES))
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shapes_and_range(name, output):
    torch.manual_seed(0)
    net = GENERATORS[name](output).eval()
    out = net(torch.randn(2, 5, 3) * 10)
    assert out.shape == (2, 5, 64)
    lo, hi = RANGES[output]
    assert out.min() >= lo and out.max() <= hi
    if output == "identity":
        assert out.min() < 0 or out.max() > 1  # no squashing


@pytest.mark.parametrize("name", sorted(DISCRIMINATORS))
def test_discriminator_gives_one_logit_per_example_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = DISCRIMINATORS[name]()
    x = torch.rand(6, 64)
    logits = net(x)
    assert logits.shape == (6, 1)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_conv_pair_follows_dcgan_layout():
    g = ConvGenerator(10, 784, channels=(128, 64))
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(128, 64), (64, 1)]
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in g.modules()) == 2
    d = ConvDiscriminator(784, 1, channels=(64, 128))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 1  # none on the first layer
    assert d(torch.rand(2, 784)).shape == (2, 1)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ConvGenerator(10, 784, image_shape=(1, 27, 27)), "image_shape"),
        (lambda: ConvGenerator(10, 784, image_shape=(1, 28, 28), channels=(8, 8, 8)), "not divisible"),
        (lambda: ConvGenerator(10, 784, channels=()), "channels"),
        (lambda: ConvDiscriminator(64, 1, image_shape=(1, 28, 28)), "image_shape"),
        (lambda: MLPGenerator(3, 4, activation="swish"), "activation"),
        (lambda: MLPGenerator(3, 4, output="softmax"), "output"),
        (lambda: MLPDiscriminator(3, 1, dropout=1.0), "dropout"),
    ],
)
def test_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()

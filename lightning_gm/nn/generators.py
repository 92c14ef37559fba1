r"""Generator and discriminator networks for implicit models of 28x28 images (GAN, moment-matching nets).

Every network has the factory signature ``(in_features, out_features)`` and works on *flat* vectors, like
:mod:`lightning_gm.nn.conv`, so a model builds it as ``factory(latent_dim, D)`` (a generator) or
``factory(D, 1)`` (a discriminator, which returns a logit):

.. math::

    G: z \in \mathbb R^{L} \mapsto x = \sigma(g(z)) \in [0, 1]^{D}, \qquad
    D: x \in \mathbb R^{D} \mapsto \ell(x) \in \mathbb R, \quad P(\text{real} \mid x) = \sigma(\ell(x)).

The MLP pair follows Goodfellow et al. (2014) (ReLU / leaky-ReLU MLPs, dropout in the discriminator);
the conv pair is DCGAN-style (Radford et al. 2016): a linear layer to a ``C x H/4 x W/4`` map, then
stride-2 transposed convolutions with batch norm and ReLU in the generator; stride-2 convolutions with
leaky ReLU (batch norm after the first) and a linear logit in the discriminator.

References: Goodfellow et al. (2014), Generative Adversarial Nets; Radford, Metz & Chintala (2016),
Unsupervised Representation Learning with Deep Convolutional GANs; Li, Swersky & Zemel (2015),
Generative Moment Matching Networks.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

from torch import Tensor, nn

from lightning_gm.nn.mlp import ACTIVATIONS

__all__ = ["OUTPUTS", "MLPGenerator", "ConvGenerator", "MLPDiscriminator", "ConvDiscriminator"]

#: output non-linearities of a generator: ``sigmoid`` for data in [0, 1], ``tanh`` for [-1, 1], ``identity``
OUTPUTS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}

OutputName = Literal["sigmoid", "tanh", "identity"]


def _act(name: str, owner: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"{owner}.activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    return ACTIVATIONS[name]()


def _output(name: str, owner: str) -> nn.Module:
    if name not in OUTPUTS:
        raise ValueError(f"{owner}.output must be one of {sorted(OUTPUTS)}, got {name!r}")
    return OUTPUTS[name]()


def _image_shape(image_shape: Sequence[int], features: int, owner: str, downsamplings: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or math.prod(shape) != features:
        raise ValueError(f"{owner}.image_shape {list(image_shape)} does not match the data: {features} values per example")
    c, h, w = shape
    if h % 2**downsamplings or w % 2**downsamplings:
        raise ValueError(f"{owner}: image size {h}x{w} is not divisible by 2^{downsamplings} for {downsamplings} stride-2 layers")
    return c, h, w


class _Flat(nn.Module):
    """Apply ``net`` to ``(..., in)`` with any leading dimensions."""

    net: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


class MLPGenerator(_Flat):
    """``z -> [linear -> (batch norm) -> act]^n -> linear -> output``.

    Args:
        in_features: latent size (given by the model).
        out_features: flat data size (given by the model).
        hidden: hidden widths.
        activation: hidden activation (a key of :data:`lightning_gm.nn.mlp.ACTIVATIONS`).
        batch_norm: batch norm before each hidden activation.
        output: ``sigmoid`` (data in [0, 1]), ``tanh`` ([-1, 1]) or ``identity``.
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (256, 512),
                 activation: str = "relu", batch_norm: bool = False, output: OutputName = "sigmoid") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_act(activation, "MLPGenerator"))
            width = h
        layers += [nn.Linear(width, out_features), _output(output, "MLPGenerator")]
        self.net = nn.Sequential(*layers)


class MLPDiscriminator(_Flat):
    """``x -> [linear -> act -> dropout]^n -> linear`` (a logit per example when ``out_features = 1``).

    Args:
        in_features: flat data size (given by the model).
        out_features: number of logits (1, given by the model).
        hidden: hidden widths.
        activation: hidden activation (``leaky_relu`` uses slope 0.2).
        dropout: dropout probability after each hidden layer (Goodfellow et al. used dropout).
    """

    def __init__(self, in_features: int, out_features: int = 1, hidden: Sequence[int] = (512, 256),
                 activation: str = "leaky_relu", dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPDiscriminator.dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), _act(activation, "MLPDiscriminator")]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)


class ConvGenerator(_Flat):
    r"""DCGAN generator: ``z -> linear -> C_0 x H/2^n x W/2^n -> [convT_{4, s=2} -> BN -> ReLU]^{n-1} ->
    convT_{4, s=2} -> output``.

    Args:
        in_features: latent size (given by the model).
        out_features: flat image size; must equal ``prod(image_shape)``.
        image_shape: ``(C, H, W)`` of one example.
        channels: channels of the feature maps entering each transposed convolution, coarsest first
            (``n = len(channels)`` upsamplings; ``(128, 64)``: 7x7 -> 14x14 -> 28x28).
        batch_norm: batch norm after the linear layer and each hidden transposed convolution.
        output: ``sigmoid`` (data in [0, 1]), ``tanh`` or ``identity``.
    """

    def __init__(self, in_features: int, out_features: int, image_shape: Sequence[int] = (1, 28, 28),
                 channels: Sequence[int] = (128, 64), batch_norm: bool = True, output: OutputName = "sigmoid") -> None:
        super().__init__()
        if not channels:
            raise ValueError("ConvGenerator.channels must name at least one feature map")
        n = len(channels)
        c, h, w = _image_shape(image_shape, out_features, "ConvGenerator", n)
        start = (int(channels[0]), h // 2**n, w // 2**n)

        def norm(k: int, dims: int) -> list[nn.Module]:
            return [(nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(k)] if batch_norm else []

        layers: list[nn.Module] = [nn.Linear(in_features, math.prod(start)), *norm(math.prod(start), 1), nn.ReLU(),
                                   nn.Unflatten(1, start)]
        chans = [*(int(k) for k in channels), c]
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            if i < n - 1:
                layers += [*norm(b, 2), nn.ReLU()]
        layers += [nn.Flatten(), _output(output, "ConvGenerator")]
        self.net = nn.Sequential(*layers)


class ConvDiscriminator(_Flat):
    r"""DCGAN discriminator: ``x -> [conv_{4, s=2} -> (BN) -> LeakyReLU(0.2)]^n -> linear`` (no batch norm
    on the first layer, as in Radford et al.).

    Args:
        in_features: flat image size; must equal ``prod(image_shape)``.
        out_features: number of logits (1, given by the model).
        image_shape: ``(C, H, W)`` of one example.
        channels: output channels of each stride-2 convolution (``(64, 128)``: 28 -> 14 -> 7).
        batch_norm: batch norm after every convolution but the first.
    """

    def __init__(self, in_features: int, out_features: int = 1, image_shape: Sequence[int] = (1, 28, 28),
                 channels: Sequence[int] = (64, 128), batch_norm: bool = True) -> None:
        super().__init__()
        if not channels:
            raise ValueError("ConvDiscriminator.channels must name at least one convolution")
        n = len(channels)
        c, h, w = _image_shape(image_shape, in_features, "ConvDiscriminator", n)
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
        for i, k in enumerate(int(k) for k in channels):
            layers.append(nn.Conv2d(c, k, 4, stride=2, padding=1))
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(k))
            layers.append(nn.LeakyReLU(0.2))
            c = k
        layers += [nn.Flatten(), nn.Linear(c * (h // 2**n) * (w // 2**n), out_features)]
        self.net = nn.Sequential(*layers)

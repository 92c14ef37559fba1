r"""Convolutional encoder and decoder for small images (28x28 MNIST), and the MLP networks the VAE builds
by default, all with the factory signature ``(in_features, out_features)`` that models call.

Both conv networks take and give *flat* vectors, so they drop into any model that works on ``(B, D)``:

.. math::

    \text{ConvEncoder: } x \in \mathbb R^{C H W} \to [\text{conv}_{s=2} \to \text{act}]^{n}
        \to \text{linear} \to \mathbb R^{\text{out}}, \qquad
    \text{ConvDecoder: } z \to \text{linear} \to [\text{convT}_{s=2} \to \text{act}]^{n} \to \mathbb R^{P \cdot H W}

The decoder's ``P`` output channels are the likelihood's parameters per pixel, laid out channel-major,
which is the ``(..., num_params(D))`` layout every :class:`~lightning_gm.nn.likelihoods.Likelihood`
splits with ``chunk`` (e.g. channel 0 the means, channel 1 the log-scales).

References: Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow
(ResNet VAE); Salimans, Kingma & Welling (2015) (the conv VAE on MNIST).
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from lightning_gm.nn.mlp import MLP, activation_module, check_init, init_module_

__all__ = ["ConvEncoder", "ConvDecoder", "MLPNet"]


class MLPNet(MLP):
    """An :class:`~lightning_gm.nn.mlp.MLP` ``in_features -> *hidden -> out_features`` with the factory signature.

    Args:
        in_features: input size (given by the model).
        out_features: output size (given by the model).
        hidden: hidden widths.
        activation: hidden activation (or ``"gated"``: gated dense units).
        init: weight initialisation (:data:`~lightning_gm.nn.mlp.INITS`; ``xavier_uniform`` for tanh as in
            Burda et al., ``he_normal`` for ReLU-like or gated units, ``torch`` = PyTorch's default).
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", init: str = "torch") -> None:
        super().__init__([in_features, *hidden, out_features], activation, init)


class ConvEncoder(nn.Module):
    """Strided convolutions, then a hidden linear layer, then a linear output.

    Args:
        in_features: flat input size; must equal ``prod(image_shape)``.
        out_features: output size (given by the model).
        image_shape: ``(C, H, W)`` of one example.
        channels: output channels of each stride-2 3x3 convolution (each halves H and W, rounding up).
        hidden: width of the linear layer after the convolutions.
        activation: activation after every layer but the last.
        init: weight initialisation of every layer (:data:`~lightning_gm.nn.mlp.INITS`; ``he_normal`` suits
            ELU/ReLU, ``torch`` = PyTorch's default).
    """

    def __init__(self, in_features: int, out_features: int, image_shape: Sequence[int] = (1, 28, 28),
                 channels: Sequence[int] = (32, 64), hidden: int = 256, activation: str = "elu",
                 init: str = "torch") -> None:
        super().__init__()
        check_init(init, "ConvEncoder.init")
        act_owner = "ConvEncoder.activation"
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3 or math.prod(self.image_shape) != in_features:
            raise ValueError(
                f"ConvEncoder.image_shape {list(image_shape)} does not match the data: {in_features} values per example"
            )
        c, h, w = self.image_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), activation_module(activation, act_owner)]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), activation_module(activation, act_owner),
                   nn.Linear(hidden, out_features)]
        self.net = init_module_(nn.Sequential(*layers), init) if init != "torch" else nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., D) -> (..., out_features)``."""
        lead = x.shape[:-1]
        out = self.net(x.reshape(-1, *self.image_shape))
        return out.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """A linear layer to a small feature map, then stride-2 transposed convolutions up to the image size.

    Args:
        in_features: latent size (given by the model).
        out_features: ``P * H * W`` likelihood parameters (given by the model); ``P`` is inferred.
        image_shape: ``(C, H, W)`` of one example (``C`` must be 1 unless ``P`` is a multiple of it).
        channels: input channels of each stride-2 transposed convolution, coarsest first.
        hidden: width of the first linear layer.
        activation: activation after every layer but the last.
        init: weight initialisation of every layer (:data:`~lightning_gm.nn.mlp.INITS`; ``he_normal`` suits
            ELU/ReLU, ``torch`` = PyTorch's default).
    """

    def __init__(self, in_features: int, out_features: int, image_shape: Sequence[int] = (1, 28, 28),
                 channels: Sequence[int] = (64, 32), hidden: int = 256, activation: str = "elu",
                 init: str = "torch") -> None:
        super().__init__()
        check_init(init, "ConvDecoder.init")
        act_owner = "ConvDecoder.activation"
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        if len(self.image_shape) != 3 or out_features % (h * w):
            raise ValueError(
                f"ConvDecoder.image_shape {list(image_shape)} does not divide the {out_features} outputs the likelihood needs"
            )
        self.out_channels = out_features // (h * w)
        n = len(channels)
        if h % (2**n) or w % (2**n):
            raise ValueError(f"ConvDecoder: image size {h}x{w} is not divisible by 2^{n} for {n} upsampling layers")
        self.start = (int(channels[0]), h // 2**n, w // 2**n)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden), activation_module(activation, act_owner),
                                   nn.Linear(hidden, math.prod(self.start)), activation_module(activation, act_owner),
                                   nn.Unflatten(1, self.start)]
        chans = [*channels, self.out_channels]
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            if i < n - 1:
                layers.append(activation_module(activation, act_owner))
        self.net = init_module_(nn.Sequential(*layers), init) if init != "torch" else nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """``(..., in_features) -> (..., P * H * W)`` (channel-major)."""
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, -1)

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
from typing import Callable, Optional, Sequence

from torch import Tensor, nn

from lightning_gm.nn.mlp import MLP, activation_module, check_init, init_module_

__all__ = ["FlatConvNet", "ConvEncoder", "ConvDecoder", "MLPNet"]


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


class FlatConvNet(nn.Module):
    """A convolutional network on *flat* vectors with the factory signature ``(in_features, out_features)``:
    ``(..., in_features) -> (..., out_features)``, the leading dimensions folded into one batch and restored.
    :class:`ConvEncoder` and :class:`ConvDecoder` supply its layers (:meth:`_layers`) and the shape a batch
    is read in (:meth:`_batched`).

    Args:
        in_features: input size (given by the model).
        out_features: output size (given by the model).
        image_shape: ``(C, H, W)`` of one example.
        channels: channels of the stride-2 convolutions: :class:`ConvEncoder`'s outputs, image side first
            (default ``(32, 64)``); :class:`ConvDecoder`'s inputs, coarsest first (default ``(64, 32)``); ``None`` =
            that default (the class's ``default_channels``).
        hidden: width of the linear layer between the convolutions and the flat side.
        activation: activation after every layer but the last.
        init: weight initialisation of every layer (:data:`~lightning_gm.nn.mlp.INITS`; ``he_normal`` suits
            ELU/ReLU, ``torch`` = PyTorch's default).

    References:
        Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow (ResNet VAE);
        Salimans, Kingma & Welling (2015), Markov Chain Monte Carlo and Variational Inference (conv VAE on MNIST).
    """

    default_channels: tuple[int, ...] = ()

    def __init__(self, in_features: int, out_features: int, image_shape: Sequence[int] = (1, 28, 28),
                 channels: Optional[Sequence[int]] = None, hidden: int = 256, activation: str = "elu",
                 init: str = "torch") -> None:
        super().__init__()
        name = type(self).__name__
        check_init(init, f"{name}.init")
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"{name}.image_shape must be (C, H, W), got {list(image_shape)}")
        chans = tuple(int(c) for c in (self.default_channels if channels is None else channels))
        act = lambda: activation_module(activation, f"{name}.activation")  # noqa: E731
        net = nn.Sequential(*self._layers(in_features, out_features, chans, hidden, act))
        self.net = init_module_(net, init) if init != "torch" else net

    def _layers(self, in_features: int, out_features: int, channels: tuple[int, ...], hidden: int,
                act: Callable[[], nn.Module]) -> list[nn.Module]:
        """The layers, checking that the sizes fit ``image_shape`` (``ValueError`` naming the argument)."""
        raise NotImplementedError

    def _batched(self, x: Tensor) -> Tensor:
        """``(..., in_features)`` as the one batch ``net`` reads."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        lead = x.shape[:-1]
        return self.net(self._batched(x)).reshape(*lead, -1)


class ConvEncoder(FlatConvNet):
    """Strided convolutions, then a hidden linear layer, then a linear output (:class:`FlatConvNet`'s
    arguments): ``in_features`` must equal ``prod(image_shape)``; ``channels`` (default ``(32, 64)``) are the
    output channels of each stride-2 3x3 convolution (each halves H and W, rounding up).
    """

    default_channels = (32, 64)

    def _layers(self, in_features: int, out_features: int, channels: tuple[int, ...], hidden: int,
                act: Callable[[], nn.Module]) -> list[nn.Module]:
        if math.prod(self.image_shape) != in_features:
            raise ValueError(
                f"ConvEncoder.image_shape {list(self.image_shape)} does not match the data: {in_features} values per example"
            )
        c, h, w = self.image_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), act()]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
        return layers + [nn.Flatten(), nn.Linear(c * h * w, hidden), act(), nn.Linear(hidden, out_features)]

    def _batched(self, x: Tensor) -> Tensor:
        return x.reshape(-1, *self.image_shape)


class ConvDecoder(FlatConvNet):
    """A linear layer to a small feature map, then stride-2 transposed convolutions up to the image size
    (:class:`FlatConvNet`'s arguments): ``out_features`` is ``P * H * W`` likelihood parameters (``P`` inferred;
    ``C`` must be 1 unless ``P`` is a multiple of it); ``channels`` (default ``(64, 32)``) are the input channels
    of each stride-2 transposed convolution, coarsest first.
    """

    default_channels = (64, 32)

    def _layers(self, in_features: int, out_features: int, channels: tuple[int, ...], hidden: int,
                act: Callable[[], nn.Module]) -> list[nn.Module]:
        c, h, w = self.image_shape
        if out_features % (h * w):
            raise ValueError(
                f"ConvDecoder.image_shape {list(self.image_shape)} does not divide the {out_features} outputs the likelihood needs"
            )
        self.out_channels = out_features // (h * w)
        n = len(channels)
        if h % (2**n) or w % (2**n):
            raise ValueError(f"ConvDecoder: image size {h}x{w} is not divisible by 2^{n} for {n} upsampling layers")
        self.start = (channels[0], h // 2**n, w // 2**n)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden), act(), nn.Linear(hidden, math.prod(self.start)),
                                   act(), nn.Unflatten(1, self.start)]
        chans = [*channels, self.out_channels]
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            if i < n - 1:
                layers.append(act())
        return layers

    def _batched(self, z: Tensor) -> Tensor:
        return z.reshape(-1, z.shape[-1])

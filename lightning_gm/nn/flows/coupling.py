r"""Affine coupling layers (RealNVP / Glow) for vectors and images, with binary masks.

A binary mask :math:`b` (1 = conditioning / unchanged part) splits the input. With a
conditioner network :math:`NN` (any module, injected):

.. math::

    (\tilde s, t) = NN(b \odot x \,[, \text{context}]), \qquad
    \log s = (1 - b) \odot g(\tilde s), \quad t \leftarrow (1 - b)\odot t,

.. math::

    z = x \odot e^{\log s} + t, \qquad
    \log\left|\det \frac{\partial z}{\partial x}\right| = \sum_i \log s_i, \qquad
    x = (z - t) \odot e^{-\log s}.

:math:`g` is a numerically stable scale map (:func:`~lightning_gm.nn.flows.base.affine_log_scale`):
soft-clamped ``"tanh"`` :math:`g(r) = c\tanh(r/c)` (default), Glow's ``"sigmoid"``
:math:`g(r) = \log\sigma(r + 2)`, or unconstrained ``"exp"``.

Masks: :func:`alternating_mask` for vectors ``(D,)``, :func:`checkerboard_mask` ``(C, H, W)``
and :func:`channel_mask` ``(C, 1, 1)`` for images.

References:
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer, affine_log_scale, sum_except_batch

__all__ = [
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
    "mlp_conditioner",
    "conv_conditioner",
    "resnet_conditioner",
    "ResidualBlock",
    "zero_init_last_layer",
    "AffineCoupling",
]


def alternating_mask(features: int, parity: int = 0) -> Tensor:
    """Vector mask ``(D,)``: ``mask[i] = 1`` iff ``i % 2 == parity`` (1 = conditioning part)."""
    return (torch.arange(features) % 2 == parity % 2).float()


def checkerboard_mask(channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """Image checkerboard mask ``(C, H, W)``: ``mask[c, i, j] = 1`` iff ``(i + j) % 2 == parity``."""
    i = torch.arange(height).view(-1, 1)
    j = torch.arange(width).view(1, -1)
    board = ((i + j) % 2 == parity % 2).float()
    return board.unsqueeze(0).expand(channels, height, width).clone()


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """Image channel mask ``(C, 1, 1)``: the first ``C // 2`` channels (``parity=0``) or the others (``parity=1``) are 1."""
    first = (torch.arange(channels) < channels // 2).float()
    mask = first if parity % 2 == 0 else 1.0 - first
    return mask.view(channels, 1, 1)


def mlp_conditioner(
    in_features: int,
    out_features: int,
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    activation: Type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Default vector conditioner: MLP ``(B, in_features) -> (B, out_features)``."""
    layers = []
    width = in_features
    for _ in range(num_hidden_layers):
        layers += [nn.Linear(width, hidden_features), activation()]
        width = hidden_features
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def conv_conditioner(in_channels: int, out_channels: int, hidden_channels: int = 64) -> nn.Sequential:
    """Default image conditioner (Glow's NN): conv3x3 - ReLU - conv1x1 - ReLU - conv3x3, ``(B, C_in, H, W) -> (B, C_out, H, W)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden_channels, hidden_channels, 1),
        nn.ReLU(),
        nn.Conv2d(hidden_channels, out_channels, 3, padding=1),
    )


class ResidualBlock(nn.Module):
    r"""Pre-activation residual block of RealNVP's coupling networks: :math:`h + \mathrm{conv}(\mathrm{relu}(
    \mathrm{BN}(\mathrm{conv}(\mathrm{relu}(\mathrm{BN}(h))))))`, 3x3 convolutions, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: feature maps :math:`C`.
        batch_norm: batch-normalise before each ReLU (RealNVP does; statistics of the batch in training,
            running averages in evaluation).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 4.1).
        He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016.
    """

    def __init__(self, channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(channels)) if batch_norm else nn.Identity
        self.body = nn.Sequential(
            norm(), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            norm(), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


def resnet_conditioner(in_channels: int, out_channels: int, hidden_channels: int = 64, num_blocks: int = 8,
                       batch_norm: bool = True) -> nn.Sequential:
    """RealNVP's image conditioner: conv3x3 to ``hidden_channels``, ``num_blocks`` :class:`ResidualBlock`, then
    (BN) - ReLU - conv3x3 to ``out_channels`` (zeroed by the coupling), ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    The paper's CIFAR-10 networks have 8 blocks of 64 feature maps. Its authors' code also concatenates the mask
    and :math:`-x` to the input, adds skip connections from every block, uses weight normalisation, and doubles the
    width at every scale; this conditioner keeps the residual stack and batch normalisation only.
    """
    norm: list[nn.Module] = [nn.BatchNorm2d(hidden_channels)] if batch_norm else []
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
        *[ResidualBlock(hidden_channels, batch_norm) for _ in range(num_blocks)],
        *norm,
        nn.ReLU(),
        nn.Conv2d(hidden_channels, out_channels, 3, padding=1),
    )


def zero_init_last_layer(module: nn.Module) -> None:
    """Zero the weight and bias of the last ``nn.Linear`` / ``nn.Conv*`` in ``module.modules()`` order."""
    last = None
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            last = m
    if last is None:
        raise ValueError("no nn.Linear / nn.Conv layer to zero-initialise")
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()


class AffineCoupling(FlowLayer):
    r"""Masked affine coupling layer for vectors ``(B, D)`` or images ``(B, C, H, W)``.

    .. math::

        (\tilde s, t) = NN(b \odot x\,[, h]), \quad \log s = (1-b)\odot g(\tilde s), \quad
        z = x \odot e^{\log s} + (1-b)\odot t, \quad
        \log\left|\det \frac{\partial z}{\partial x}\right| = \sum_i \log s_i .

    The conditioner receives the masked input (masked entries are zero), concatenated
    along dim 1 with the context :math:`h` if ``context_features > 0`` (for images a
    ``(B, C_ctx)`` context is broadcast over ``H, W``), and must return ``2 * C``
    features/channels (first half: raw log-scale :math:`\tilde s`, second half: shift :math:`t`).

    Args:
        mask: binary mask, ``(D,)`` for vectors or ``(C, H, W)`` / ``(C, 1, 1)`` for images
            (1 = conditioning, left unchanged). Stored as a buffer.
        conditioner: network ``(B, C + C_ctx, ...) -> (B, 2C, ...)``. ``None`` builds
            :func:`mlp_conditioner` (vectors) or :func:`conv_conditioner` (images) of width
            ``hidden_features``.
        conditioner_factory: alternative to ``conditioner``: ``factory(in, out) -> nn.Module``.
        hidden_features: width of the default conditioner.
        scale: ``"tanh"`` (soft clamp, default), ``"sigmoid"`` (Glow) or ``"exp"``.
        clamp: soft-clamp bound for ``"tanh"``.
        context_features: size of the conditioning context (0 = unconditional).
        zero_init: zero the conditioner's last linear/conv layer so the layer starts as the
            identity (exactly for ``"tanh"``/``"exp"``; a constant scale :math:`\sigma(2)` for ``"sigmoid"``).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    mask: Tensor

    def __init__(
        self,
        mask: Tensor,
        conditioner: Optional[nn.Module] = None,
        *,
        conditioner_factory: Optional[Callable[[int, int], nn.Module]] = None,
        hidden_features: int = 64,
        scale: str = "tanh",
        clamp: float = 2.0,
        context_features: int = 0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() not in (1, 3):
            raise ValueError("mask must have shape (D,) or (C, H, W)")
        self.register_buffer("mask", mask)
        self.image = mask.dim() == 3
        self.scale = scale
        self.clamp = clamp
        self.context_features = context_features
        affine_log_scale(torch.zeros(1), scale, clamp)  # validate the name early
        channels = mask.shape[0]
        in_ch, out_ch = channels + context_features, 2 * channels
        if conditioner is None:
            if conditioner_factory is not None:
                conditioner = conditioner_factory(in_ch, out_ch)
            elif self.image:
                conditioner = conv_conditioner(in_ch, out_ch, hidden_features)
            else:
                conditioner = mlp_conditioner(in_ch, out_ch, hidden_features)
        self.conditioner = conditioner
        if zero_init:
            zero_init_last_layer(self.conditioner)

    def _params(self, x: Tensor, context: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        h = x * self.mask
        if self.context_features > 0:
            if context is None:
                raise ValueError("this coupling layer is conditional: pass a context")
            if x.dim() > 2 and context.dim() == 2:
                context = context[:, :, None, None].expand(-1, -1, *x.shape[2:])
            h = torch.cat([h, context.to(h.dtype)], dim=1)
        raw, shift = self.conditioner(h).chunk(2, dim=1)
        inv_mask = 1.0 - self.mask
        return affine_log_scale(raw, self.scale, self.clamp) * inv_mask, shift * inv_mask

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        log_s, shift = self._params(x, context)
        return x * torch.exp(log_s) + shift, sum_except_batch(log_s)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        log_s, shift = self._params(z, context)  # masked part of z equals that of x
        return (z - shift) * torch.exp(-log_s), -sum_except_batch(log_s)

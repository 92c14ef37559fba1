r"""Glow building blocks: invertible 1x1 convolution (LU-parameterised) and the Glow step.

The invertible 1x1 convolution applies one :math:`C\times C` matrix :math:`W` to every
spatial position (channels on dim 1, any number of trailing spatial dims, also plain
vectors ``(B, C)`` where it is an invertible linear layer):

.. math::

    z_{:, :, i, j} = W x_{:, :, i, j}, \qquad
    \log\left|\det \frac{\partial z}{\partial x}\right| = H W \log|\det W| .

LU parameterisation: :math:`W = P L (U + \operatorname{diag}(\operatorname{sign}(s) e^{\log|s|}))`
with :math:`P` a fixed permutation (buffer), :math:`L` unit lower triangular,
:math:`U` strictly upper triangular, :math:`\operatorname{sign}(s)` fixed (buffer), so
:math:`\log|\det W| = \sum_c \log|s_c|` costs :math:`O(C)`.

References:
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer, FlowSequence
from lightning_gm.nn.flows.coupling import AffineCoupling, channel_mask
from lightning_gm.nn.flows.normalization import ActNorm

__all__ = ["InvertibleConv1x1", "GlowStep"]


def _apply_channel_matrix(w: Tensor, x: Tensor) -> Tensor:
    """Multiply the channel dim (dim 1) of ``x`` ``(B, C, *spatial)`` by ``w`` ``(C, C)``."""
    return torch.einsum("ij,bj...->bi...", w, x)


class InvertibleConv1x1(FlowLayer):
    r"""Invertible 1x1 convolution, optionally LU-parameterised.

    .. math::

        W = P L \big(U + \operatorname{diag}(\operatorname{sign}(s)\, e^{\log|s|})\big), \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| = \Big(\prod\text{spatial}\Big)\sum_c \log|s_c| .

    Initialised from a random rotation (QR of a Gaussian matrix). Without LU
    (``lu=False``) :math:`W` is a free parameter and the log-det uses ``torch.linalg.slogdet``.

    Args:
        num_channels: :math:`C`.
        lu: use the LU parameterisation.
        seed: seed for the random rotation (``None``: global RNG).

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018 (Sec. 3.2).
    """

    def __init__(self, num_channels: int, lu: bool = True, seed: Optional[int] = None) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.lu = lu
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        w0, _ = torch.linalg.qr(torch.randn(num_channels, num_channels, generator=gen, dtype=torch.float64))
        if lu:
            p, lower, upper = torch.linalg.lu(w0)
            s = torch.diagonal(upper)
            self.register_buffer("perm", p.float())
            self.register_buffer("sign_s", torch.sign(s).float())
            self.lower = nn.Parameter(torch.tril(lower, -1).float())
            self.upper = nn.Parameter(torch.triu(upper, 1).float())
            self.log_s = nn.Parameter(torch.log(s.abs()).float())
        else:
            self.weight = nn.Parameter(w0.float())

    def _factors(self) -> Tuple[Tensor, Tensor, Tensor]:
        eye = torch.eye(self.num_channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm, lower, upper

    def weight_matrix(self) -> Tensor:
        """The ``(C, C)`` matrix :math:`W`."""
        if not self.lu:
            return self.weight
        p, lower, upper = self._factors()
        return p @ lower @ upper

    def inverse_weight_matrix(self) -> Tensor:
        r"""The ``(C, C)`` matrix :math:`W^{-1} = U^{-1} L^{-1} P^\top` (triangular solves for LU)."""
        if not self.lu:
            return torch.linalg.inv(self.weight)
        p, lower, upper = self._factors()
        eye = torch.eye(self.num_channels, dtype=lower.dtype, device=lower.device)
        l_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return u_inv @ l_inv @ p.T

    def _logdet_w(self) -> Tensor:
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight).logabsdet

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        spatial = int(math.prod(x.shape[2:]))
        z = _apply_channel_matrix(self.weight_matrix(), x)
        return z, (self._logdet_w() * spatial).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        spatial = int(math.prod(z.shape[2:]))
        x = _apply_channel_matrix(self.inverse_weight_matrix(), z)
        return x, (-self._logdet_w() * spatial).expand(z.shape[0])


class GlowStep(FlowSequence):
    r"""One step of flow: ActNorm -> invertible 1x1 conv -> affine coupling (channel mask).

    .. math::

        \log\left|\det \frac{\partial z}{\partial x}\right| =
        \log|\det J_{\text{actnorm}}| + H W \log|\det W| + \sum_i \log s_i .

    Args:
        num_channels: :math:`C` (>= 2).
        hidden_channels: width of the default conv conditioner.
        scale: coupling scale map (``"sigmoid"`` = Glow, ``"tanh"`` = soft clamp).
        clamp: soft-clamp bound for ``"tanh"``.
        lu: LU-parameterise the 1x1 convolution.
        context_features: context channels for the coupling conditioner (0 = unconditional).
        conditioner_factory: ``factory(in_channels, out_channels) -> nn.Module`` overriding the default.
        parity: which channel half conditions the coupling.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    def __init__(
        self,
        num_channels: int,
        hidden_channels: int = 64,
        scale: str = "sigmoid",
        clamp: float = 2.0,
        lu: bool = True,
        context_features: int = 0,
        conditioner_factory: Optional[Callable[[int, int], nn.Module]] = None,
        parity: int = 0,
    ) -> None:
        super().__init__(
            [
                ActNorm(num_channels),
                InvertibleConv1x1(num_channels, lu=lu),
                AffineCoupling(
                    channel_mask(num_channels, parity),
                    conditioner_factory=conditioner_factory,
                    hidden_features=hidden_channels,
                    scale=scale,
                    clamp=clamp,
                    context_features=context_features,
                ),
            ]
        )

r"""Permutation flow layers (volume preserving, log-det 0).

A permutation :math:`z = P x` along one dimension (features for vectors, channels
for images) has :math:`|\det P| = 1`, hence :math:`\log|\det \partial z/\partial x| = 0`.
The permutation is a buffer, so it is saved in ``state_dict``.

References:
    Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR workshop 2015.
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018 (reverse / shuffle baselines).
    Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from lightning_gm.nn.flows.base import FlowLayer

__all__ = ["Permutation", "ReversePermutation", "RandomPermutation", "ChannelShuffle"]


class Permutation(FlowLayer):
    r"""Fixed permutation along ``dim``: :math:`z_{\cdot, i} = x_{\cdot, \pi(i)}`.

    .. math::

        \log\left|\det \frac{\partial z}{\partial x}\right| = 0 .

    Args:
        permutation: a permutation of ``0..n-1`` (tensor or sequence).
        dim: the dimension to permute (``1`` = features of ``(B, D)`` or channels of
            ``(B, C, H, W)``).

    References:
        Dinh, Krueger & Bengio, "NICE", ICLR workshop 2015.
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Union[Tensor, Sequence[int]], dim: int = 1) -> None:
        super().__init__()
        perm = torch.as_tensor(permutation, dtype=torch.long)
        if not torch.equal(torch.sort(perm).values, torch.arange(perm.numel())):
            raise ValueError("not a permutation of 0..n-1")
        self.dim = dim
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return x.index_select(self.dim, self.permutation), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return z.index_select(self.dim, self.inverse_permutation), z.new_zeros(z.shape[0])


class ReversePermutation(Permutation):
    """Reverse the order along ``dim`` (``n-1, ..., 0``).

    Args:
        features: size ``n`` of ``dim``.
        dim: dimension to reverse (``1`` for features/channels).

    References:
        Dinh, Krueger & Bengio, "NICE", ICLR workshop 2015; Kingma & Dhariwal, "Glow", NeurIPS 2018.
    """

    def __init__(self, features: int, dim: int = 1) -> None:
        super().__init__(torch.arange(features - 1, -1, -1), dim=dim)


class RandomPermutation(Permutation):
    """Fixed random permutation along ``dim`` drawn at construction.

    Args:
        features: size ``n`` of ``dim``.
        seed: seed of a private ``torch.Generator`` (``None``: use the global RNG).
        dim: dimension to permute (``1`` for features/channels).

    References:
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    """

    def __init__(self, features: int, seed: Optional[int] = None, dim: int = 1) -> None:
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        super().__init__(torch.randperm(features, generator=gen), dim=dim)


class ChannelShuffle(RandomPermutation):
    """Fixed random shuffle of the channels of ``(B, C, H, W)`` images (Glow's "shuffle").

    Args:
        num_channels: number of channels ``C``.
        seed: seed of a private ``torch.Generator`` (``None``: use the global RNG).

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    def __init__(self, num_channels: int, seed: Optional[int] = None) -> None:
        super().__init__(num_channels, seed=seed, dim=1)

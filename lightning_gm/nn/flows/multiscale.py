r"""Multi-scale architecture: squeeze and factor-out split (the RealNVP / Glow image flows built on them are
:class:`~lightning_gm.nn.flows.architectures.MultiScaleRealNVP` and :class:`~lightning_gm.nn.flows.architectures.Glow`).

Squeeze trades space for channels, :math:`(C, H, W) \to (C f^2, H/f, W/f)` (a permutation,
log-det 0). :class:`MultiScaleFlow` runs a list of *levels* (any shape-changing
:class:`~lightning_gm.nn.flows.base.FlowLayer`, typically ``Squeeze`` + steps); after every
level but the last, half of the channels are *factored out* (sent directly to the base
distribution) and only the rest is processed further:

.. math::

    (z_\ell, h_\ell) = \operatorname{split}(f_\ell(h_{\ell-1})), \qquad
    z = [\operatorname{vec}(z_1), \dots, \operatorname{vec}(z_{L-1}), \operatorname{vec}(f_L(h_{L-1}))],

.. math::

    \log p(x) = \log \mathcal{N}(z; 0, I) + \sum_\ell \log\left|\det \frac{\partial f_\ell}{\partial h_{\ell-1}}\right| ,

since the split is a (volume-preserving) re-indexing.

References:
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 3.6).
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer

__all__ = ["Squeeze", "MultiScaleFlow"]


class Squeeze(FlowLayer):
    r"""Space-to-depth: ``(B, C, H, W) -> (B, C f^2, H/f, W/f)``, log-det 0.

    .. math::

        z_{b,\, c f^2 + i f + j,\, h, w} = x_{b,\, c,\, h f + i,\, w f + j}, \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| = 0 .

    Args:
        factor: spatial factor :math:`f` (H and W must be divisible by it).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 3.6).
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"spatial size {(h, w)} not divisible by {f}")
        z = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return z.reshape(b, c * f * f, h // f, w // f), x.new_zeros(b)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        b, c, h, w = z.shape
        f = self.factor
        x = z.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (f * f), h * f, w * f), z.new_zeros(b)

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        c, h, w = shape
        f = self.factor
        return (c * f * f, h // f, w // f)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        c, h, w = shape
        f = self.factor
        return (c // (f * f), h * f, w * f)


class MultiScaleFlow(FlowLayer):
    r"""Multi-scale flow with factor-out splits; ``forward`` returns the flat latent ``(B, C H W)``.

    .. math::

        \log p(x) = \sum_{i=1}^{CHW} \log \mathcal{N}(z_i; 0, 1) + \texttt{log\_abs\_det}.

    Level :math:`\ell < L` maps its input to shape :math:`(C_\ell, H_\ell, W_\ell)`
    (via ``level.forward_shape``); its first
    :math:`\lfloor C_\ell / 2 \rfloor` channels are factored out, the remaining
    :math:`C_\ell - \lfloor C_\ell/2 \rfloor` go to level :math:`\ell + 1`. ``inverse`` takes the
    flat latent and re-assembles the pieces. ``context`` is passed to every level.

    Args:
        input_shape: event shape ``(C, H, W)`` of the data.
        levels: one flow layer per scale (e.g. ``FlowSequence([Squeeze(), GlowStep(4C), ...])``).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 3.6).
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    def __init__(self, input_shape: Sequence[int], levels: Sequence[FlowLayer]) -> None:
        super().__init__()
        if len(levels) == 0:
            raise ValueError("need at least one level")
        self.input_shape = tuple(input_shape)
        self.levels = nn.ModuleList(levels)
        self.z_shapes: List[Tuple[int, ...]] = []
        shape: Tuple[int, ...] = self.input_shape
        for i, level in enumerate(levels):
            shape = tuple(level.forward_shape(shape))
            if i < len(levels) - 1:
                n_out = shape[0] // 2
                if n_out == 0:
                    raise ValueError(f"level {i} outputs {shape[0]} channel(s): cannot split")
                self.z_shapes.append((n_out, *shape[1:]))
                shape = (shape[0] - n_out, *shape[1:])
            else:
                self.z_shapes.append(shape)
        self.num_dims = int(sum(math.prod(s) for s in self.z_shapes))
        if self.num_dims != math.prod(self.input_shape):
            raise ValueError("levels are not dimension preserving")

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        h = x
        total = x.new_zeros(x.shape[0])
        zs = []
        last = len(self.levels) - 1
        for i, level in enumerate(self.levels):
            h, ladj = level(h, context)
            total = total + ladj
            if i < last:
                n_out = self.z_shapes[i][0]
                zs.append(h[:, :n_out].reshape(x.shape[0], -1))
                h = h[:, n_out:]
        zs.append(h.reshape(x.shape[0], -1))
        return torch.cat(zs, dim=1), total

    def split_latent(self, z: Tensor) -> List[Tensor]:
        """Split a flat latent ``(B, D)`` into the per-scale pieces of shapes ``(B, *z_shapes[l])``."""
        sizes = [math.prod(s) for s in self.z_shapes]
        return [p.reshape(z.shape[0], *s) for p, s in zip(torch.split(z, sizes, dim=1), self.z_shapes)]

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        pieces = self.split_latent(z)
        total = z.new_zeros(z.shape[0])
        h = pieces[-1]
        for i in range(len(self.levels) - 1, -1, -1):
            if i < len(self.levels) - 1:
                h = torch.cat([pieces[i], h], dim=1)
            h, ladj = self.levels[i].inverse(h, context)
            total = total + ladj
        return h, total

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return (self.num_dims,)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return self.input_shape

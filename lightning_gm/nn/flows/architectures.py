r"""Whole flow architectures as typed ``nn.Module`` classes, built from the data shape.

Each class takes the event shape of the data as its **first** argument and the architecture's
knobs after it, so a config names one by ``class_path`` and the model supplies the shape::

    flow:
      class_path: lightning_gm.nn.flows.MAF
      init_args: {num_layers: 5, hidden_features: [1024]}

(the ``Flow`` model types its ``flow`` argument as ``Callable[[Sequence[int]], FlowLayer]``;
jsonargparse turns the block above into ``lambda shape: MAF(shape, num_layers=5, ...)``.)
All of them map data ``(B, *shape)`` to noise ``(B, D)`` or ``(B, *shape)`` with the
:class:`~lightning_gm.nn.flows.base.FlowLayer` convention, so

.. math::

    \log p(x) = \log \mathcal N(f(x); 0, I) + \log\left|\det \frac{\partial f(x)}{\partial x}\right| .

References:
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.autoregressive import MaskedAutoregressiveFlow
from lightning_gm.nn.flows.base import FlowLayer, FlowSequence
from lightning_gm.nn.flows.coupling import AffineCoupling, alternating_mask, mlp_conditioner
from lightning_gm.nn.flows.elementwise import PlanarFlow, RadialFlow
from lightning_gm.nn.flows.normalization import ActNorm, BatchNormFlow
from lightning_gm.nn.flows.multiscale import MultiScaleFlow, glow_multiscale, realnvp_multiscale
from lightning_gm.nn.flows.permutation import RandomPermutation, ReversePermutation

__all__ = ["Flatten", "SplitConditioner", "RealNVP", "MAF", "MultiScaleRealNVP", "Glow", "PlanarStack", "RadialStack"]


class Flatten(FlowLayer):
    r"""Reshape ``(B, *shape)`` to ``(B, D)``, :math:`D = \prod \text{shape}` (a re-indexing: log-det 0).

    Args:
        shape: the event shape before flattening.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return z.reshape(z.shape[0], *self.shape), z.new_zeros(z.shape[0])

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return (int(math.prod(shape)),)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return self.shape


class SplitConditioner(nn.Module):
    r"""Coupling conditioner for vectors that reads only the conditioning entries of a mask.

    With conditioning indices :math:`a = \{i : b_i = 1\}` and transformed ones :math:`c = \{i : b_i = 0\}`,
    an MLP maps :math:`x_a \in \mathbb R^{|a|}` to :math:`(\tilde s_c, t_c) \in \mathbb R^{2|c|}`, written
    into a ``(B, 2D)`` output (zeros at :math:`a`) in the layout
    :class:`~lightning_gm.nn.flows.coupling.AffineCoupling` expects. Same function class as an MLP on
    the masked full vector, with about half the first- and last-layer weights (as in RealNVP's
    and zuko's couplings).

    Args:
        mask: ``(D,)`` binary mask (1 = conditioning).
        hidden_features: MLP width.
        num_hidden_layers: MLP hidden layers.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    idx_in: Tensor
    idx_out: Tensor

    def __init__(self, mask: Tensor, hidden_features: int = 64, num_hidden_layers: int = 2) -> None:
        super().__init__()
        mask = torch.as_tensor(mask).flatten().bool()
        self.features = int(mask.numel())
        self.register_buffer("idx_in", mask.nonzero().flatten())
        self.register_buffer("idx_out", (~mask).nonzero().flatten())
        if self.idx_in.numel() == 0 or self.idx_out.numel() == 0:
            raise ValueError("the mask must condition on some entries and transform others")
        self.net = mlp_conditioner(self.idx_in.numel(), 2 * self.idx_out.numel(), hidden_features, num_hidden_layers)

    def forward(self, h: Tensor) -> Tensor:
        """``(B, D)`` masked input -> ``(B, 2D)`` = ``[raw log-scale, shift]``, zero at conditioning entries."""
        out = self.net(h.index_select(1, self.idx_in)).view(h.shape[0], 2, -1)
        full = h.new_zeros(h.shape[0], 2, self.features)
        full[:, :, self.idx_out] = out
        return full.view(h.shape[0], 2 * self.features)


def _vector_prefix(shape: Sequence[int]) -> Tuple[List[FlowLayer], int]:
    """``([Flatten(shape)] if shape is not a vector else [], D)``."""
    shape = tuple(int(s) for s in shape)
    dim = int(math.prod(shape))
    return ([Flatten(shape)] if len(shape) != 1 else []), dim


class RealNVP(FlowSequence):
    r"""RealNVP on vectors: affine couplings with alternating masks (and optional ActNorm).

    .. math::

        z = x \odot e^{\log s(x_b)} + t(x_b)\ \text{on the unmasked half}, \qquad
        \log\left|\det \tfrac{\partial z}{\partial x}\right| = \textstyle\sum_i \log s_i ,

    the masked half :math:`x_b` alternating between layers, read by a :class:`SplitConditioner`
    MLP; :math:`\log s = c\tanh(\tilde s / c)`
    by default (a soft clamp that keeps the scales stable). Images are flattened first.

    Args:
        shape: event shape of the data (``(D,)``, or anything, flattened).
        num_layers: number of coupling layers.
        hidden_features: width of each conditioner MLP.
        num_hidden_layers: hidden layers of each conditioner MLP.
        actnorm: put an :class:`ActNorm` (data-initialised) before each coupling.
        scale: scale map, ``"tanh"`` (soft clamp), ``"sigmoid"`` (Glow) or ``"exp"``.
        clamp: soft-clamp bound :math:`c` of ``"tanh"``.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(
        self,
        shape: Sequence[int],
        num_layers: int = 8,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
        actnorm: bool = False,
        scale: str = "tanh",
        clamp: float = 2.0,
    ) -> None:
        layers, dim = _vector_prefix(shape)
        if dim < 2:
            raise ValueError(f"RealNVP needs at least 2 dimensions, got shape {tuple(shape)}")
        for i in range(num_layers):
            if actnorm:
                layers.append(ActNorm(dim))
            mask = alternating_mask(dim, i % 2)
            cond = SplitConditioner(mask, hidden_features, num_hidden_layers)
            layers.append(AffineCoupling(mask, cond, scale=scale, clamp=clamp))
        super().__init__(layers)


class MAF(FlowSequence):
    r"""Masked autoregressive flow: MADE-based affine autoregressive layers with permutations between.

    .. math::

        z_i = x_i\, e^{\log s_i(x_{<i})} + t_i(x_{<i}), \qquad
        \log\left|\det \tfrac{\partial z}{\partial x}\right| = \textstyle\sum_i \log s_i(x_{<i}),

    one MADE pass for the density, :math:`D` sequential passes to sample (the inverse direction).
    Images are flattened first.

    Args:
        shape: event shape of the data.
        num_layers: number of autoregressive layers (MAF (5) in the paper: 5).
        hidden_features: MADE hidden widths (the paper's MNIST model: ``[1024]``).
        permutation: ``"reverse"`` (the paper) or ``"random"`` (seeded) order between layers.
        actnorm: put an :class:`ActNorm` after each layer.
        batch_norm: put a :class:`BatchNormFlow` after each layer (the paper's MAF: batch norm between the
            MADEs and after the last one).
        scale: log-scale map (``"tanh"`` soft clamp by default; ``"exp"`` is the paper's unconstrained
            :math:`\alpha_i`).
        clamp: soft-clamp bound of ``"tanh"``.
        seed: seed of the random permutations.

    References:
        Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
        Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
    """

    def __init__(
        self,
        shape: Sequence[int],
        num_layers: int = 5,
        hidden_features: Sequence[int] = (64, 64),
        permutation: str = "reverse",
        actnorm: bool = False,
        batch_norm: bool = False,
        scale: str = "tanh",
        clamp: float = 3.0,
        seed: int = 0,
    ) -> None:
        if permutation not in ("reverse", "random"):
            raise ValueError(f"permutation must be 'reverse' or 'random', got {permutation!r}")
        layers, dim = _vector_prefix(shape)
        for i in range(num_layers):
            if i > 0:
                layers.append(ReversePermutation(dim) if permutation == "reverse" else RandomPermutation(dim, seed + i))
            layers.append(MaskedAutoregressiveFlow(dim, tuple(hidden_features), scale=scale, clamp=clamp))
            if actnorm:
                layers.append(ActNorm(dim))
            if batch_norm:
                layers.append(BatchNormFlow(dim))
        super().__init__(layers)


class MultiScaleRealNVP(MultiScaleFlow):
    r"""RealNVP on images ``(C, H, W)``: per scale, 3 checkerboard couplings, squeeze, 3 channel
    couplings, factor out half the channels; 4 checkerboard couplings on the last scale.

    .. math::

        \log p(x) = \log \mathcal N(z; 0, I) + \sum_\ell \log\left|\det \tfrac{\partial f_\ell}{\partial h_{\ell-1}}\right| .

    Args:
        shape: ``(C, H, W)``; ``H, W`` divisible by ``2**(num_levels - 1)``.
        num_levels: number of scales.
        hidden_channels: width of each convolutional conditioner.
        scale: scale map (``"tanh"`` soft clamp by default).
        clamp: soft-clamp bound of ``"tanh"``.
        num_blocks: residual blocks per conditioner (RealNVP's ResNets; 8 for its CIFAR-10 model); 0 = a plain
            three-layer conv conditioner.
        batch_norm: batch normalisation inside the residual conditioners and after every coupling
            (:class:`BatchNormFlow`), as in RealNVP.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 3.6, 3.7, 4.1).
    """

    def __init__(
        self,
        shape: Sequence[int],
        num_levels: int = 2,
        hidden_channels: int = 64,
        scale: str = "tanh",
        clamp: float = 2.0,
        num_blocks: int = 0,
        batch_norm: bool = False,
    ) -> None:
        if len(shape) != 3:
            raise ValueError(f"MultiScaleRealNVP needs image data (C, H, W), got shape {tuple(shape)}: set data.flatten=false")
        built = realnvp_multiscale(tuple(shape), num_levels, hidden_channels, scale, clamp,
                                   num_blocks=num_blocks, batch_norm=batch_norm)
        super().__init__(built.input_shape, list(built.levels))


class Glow(MultiScaleFlow):
    r"""Glow on images ``(C, H, W)``: ``num_levels`` scales of [squeeze, ``depth`` x (ActNorm ->
    LU-parameterised invertible 1x1 convolution -> affine coupling)], splitting between scales.

    .. math::

        \log\left|\det \tfrac{\partial z}{\partial x}\right| = \sum_{\text{steps}}
        \Big[H W \textstyle\sum_c -\log\sigma_c + H W \sum_c \log|s_c| + \sum_i \log s_i\Big] .

    Args:
        shape: ``(C, H, W)``; ``H, W`` divisible by ``2**num_levels``.
        num_levels: number of scales :math:`L`.
        depth: steps of flow per scale :math:`K`.
        hidden_channels: width of each convolutional conditioner.
        scale: coupling scale map (``"sigmoid"`` as in Glow).
        lu: LU-parameterise the 1x1 convolutions.
        split_prior: learned conditional prior of each factored-out half given the kept half (Glow's
            ``split2d``).
        learn_top: learned mean and scale of the top level's prior (Glow's ``--learntop``).

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    def __init__(
        self,
        shape: Sequence[int],
        num_levels: int = 2,
        depth: int = 8,
        hidden_channels: int = 64,
        scale: str = "sigmoid",
        lu: bool = True,
        split_prior: bool = False,
        learn_top: bool = False,
    ) -> None:
        if len(shape) != 3:
            raise ValueError(f"Glow needs image data (C, H, W), got shape {tuple(shape)}: set data.flatten=false")
        built = glow_multiscale(tuple(shape), num_levels, depth, hidden_channels, scale, lu,
                                split_prior=split_prior, learn_top=learn_top)
        super().__init__(built.input_shape, list(built.levels))


class PlanarStack(FlowSequence):
    r"""A stack of planar flows :math:`z = x + \hat u \tanh(w^\top x + b)` on vectors (closed-form density;
    sampling inverts each layer numerically).

    Args:
        shape: event shape ``(D,)`` (anything else is flattened).
        num_layers: number of planar layers.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    def __init__(self, shape: Sequence[int], num_layers: int = 16) -> None:
        layers, dim = _vector_prefix(shape)
        layers += [PlanarFlow(dim) for _ in range(num_layers)]
        super().__init__(layers)


class RadialStack(FlowSequence):
    r"""A stack of radial flows :math:`z = x + \beta (x - x_0)/(\alpha + \|x - x_0\|)` on vectors.

    Args:
        shape: event shape ``(D,)`` (anything else is flattened).
        num_layers: number of radial layers.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    def __init__(self, shape: Sequence[int], num_layers: int = 16) -> None:
        layers, dim = _vector_prefix(shape)
        layers += [RadialFlow(dim) for _ in range(num_layers)]
        super().__init__(layers)

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
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.autoregressive import MaskedAutoregressiveFlow
from lightning_gm.nn.flows.base import FlowLayer, FlowSequence
from lightning_gm.nn.flows.coupling import (
    AffineCoupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    mlp_conditioner,
    resnet_conditioner,
)
from lightning_gm.nn.flows.elementwise import ElementwiseAffine, PlanarFlow, RadialFlow
from lightning_gm.nn.flows.glow import GlowStep
from lightning_gm.nn.flows.normalization import ActNorm, BatchNormFlow
from lightning_gm.nn.flows.multiscale import MultiScaleFlow, Squeeze
from lightning_gm.nn.flows.permutation import RandomPermutation, ReversePermutation

__all__ = [
    "Flatten",
    "SplitConditioner",
    "RealNVP",
    "MAF",
    "MultiScaleRealNVP",
    "Glow",
    "LayerStack",
    "PlanarStack",
    "RadialStack",
]


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
    :class:`~lightning_gm.nn.flows.coupling.AffineCoupling` expects; a context :math:`h` that the coupling
    appends after the ``D`` entries is read too, :math:`(x_a, h) \mapsto (\tilde s_c, t_c)`. Same function class as an MLP on
    the masked full vector, with about half the first- and last-layer weights (as in RealNVP's
    and zuko's couplings).

    Args:
        mask: ``(D,)`` binary mask (1 = conditioning).
        hidden_features: MLP width.
        num_hidden_layers: MLP hidden layers.
        context_features: size of the context appended to the input (0 = unconditional).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    idx_in: Tensor
    idx_out: Tensor

    def __init__(self, mask: Tensor, hidden_features: int = 64, num_hidden_layers: int = 2,
                 context_features: int = 0) -> None:
        super().__init__()
        mask = torch.as_tensor(mask).flatten().bool()
        self.features = int(mask.numel())
        self.register_buffer("idx_in", mask.nonzero().flatten())
        self.register_buffer("idx_out", (~mask).nonzero().flatten())
        if self.idx_in.numel() == 0 or self.idx_out.numel() == 0:
            raise ValueError("the mask must condition on some entries and transform others")
        in_features = self.idx_in.numel() + int(context_features)
        self.net = mlp_conditioner(in_features, 2 * self.idx_out.numel(), hidden_features, num_hidden_layers)

    def forward(self, h: Tensor) -> Tensor:
        """``(B, D [+ context])`` masked input -> ``(B, 2D)`` = ``[raw log-scale, shift]``, zero at conditioning entries."""
        inputs = torch.cat([h.index_select(1, self.idx_in), h[:, self.features:]], dim=1)
        out = self.net(inputs).view(h.shape[0], 2, -1)
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
        context_features: size of a conditioning context :math:`h` read by every conditioner with
            :math:`x_b` (0 = unconditional).

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
        context_features: int = 0,
    ) -> None:
        layers, dim = _vector_prefix(shape)
        if dim < 2:
            raise ValueError(f"RealNVP needs at least 2 dimensions, got shape {tuple(shape)}")
        for i in range(num_layers):
            if actnorm:
                layers.append(ActNorm(dim))
            mask = alternating_mask(dim, i % 2)
            cond = SplitConditioner(mask, hidden_features, num_hidden_layers, context_features)
            layers.append(AffineCoupling(mask, cond, scale=scale, clamp=clamp, context_features=context_features))
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


def _image_shape(shape: Sequence[int], name: str) -> Tuple[int, int, int]:
    """``shape`` as ``(C, H, W)``, or a ``ValueError`` naming the architecture and the fix."""
    if len(shape) != 3:
        raise ValueError(f"{name} needs image data (C, H, W), got shape {tuple(shape)}: set data.flatten=false")
    c, h, w = (int(s) for s in shape)
    return c, h, w


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
        num_blocks: residual blocks per conditioner (RealNVP's ResNets, :func:`resnet_conditioner`; 8 for its
            CIFAR-10 model); 0 = a plain conv3x3-conv1x1-conv3x3 conditioner.
        batch_norm: batch normalisation inside the residual conditioners and after every coupling
            (:class:`BatchNormFlow`), as in RealNVP.
        context_features: context channels read by every conditioner (0 = unconditional).

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
        context_features: int = 0,
    ) -> None:
        c, h, w = input_shape = _image_shape(shape, "MultiScaleRealNVP")
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        kw: dict = dict(hidden_features=hidden_channels, scale=scale, clamp=clamp, context_features=context_features)
        if num_blocks > 0:
            kw["conditioner_factory"] = partial(resnet_conditioner, hidden_channels=hidden_channels,
                                                num_blocks=num_blocks, batch_norm=batch_norm)

        def couplings(masks: List[Tensor], channels: int) -> List[FlowLayer]:
            out: List[FlowLayer] = []
            for mask in masks:
                out.append(AffineCoupling(mask, **kw))
                if batch_norm:
                    out.append(BatchNormFlow(channels, eps=1e-4))
            return out

        levels: List[FlowLayer] = []
        for i in range(num_levels):
            if i == num_levels - 1:
                levels.append(FlowSequence(couplings([checkerboard_mask(c, h, w, k % 2) for k in range(4)], c)))
                break
            layers = couplings([checkerboard_mask(c, h, w, k % 2) for k in range(3)], c)
            layers.append(Squeeze())
            c, h, w = 4 * c, h // 2, w // 2
            layers += couplings([channel_mask(c, k % 2) for k in range(3)], c)
            levels.append(FlowSequence(layers))
            c = c - c // 2
        super().__init__(input_shape, levels)


class Glow(MultiScaleFlow):
    r"""Glow on images ``(C, H, W)``: ``num_levels`` scales of [squeeze, ``depth`` x (ActNorm ->
    LU-parameterised invertible 1x1 convolution -> affine coupling)], splitting between scales.

    .. math::

        \log\left|\det \tfrac{\partial z}{\partial x}\right| = \sum_{\text{steps}}
        \Big[H W \textstyle\sum_c -\log\sigma_c + H W \sum_c \log|s_c| + \sum_i \log s_i\Big] .

    With ``split_prior`` the factored-out half :math:`z_o` of a level gets the learned conditional prior
    :math:`\mathcal N(\mu(z_k), \sigma(z_k)^2)` given the kept half :math:`z_k` (Glow's ``split2d``), written as
    the flow layer :math:`z_o \mapsto (z_o - \mu)/\sigma` (an affine coupling whose conditioner is one
    zero-initialised conv3x3, so it starts as the identity) before a standard normal. With ``learn_top`` the
    last level's output gets a learned per-position mean and scale (Glow's ``learntop``; an
    :class:`ElementwiseAffine`, initially the identity).

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
        context_features: context channels read by every coupling (0 = unconditional).

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
        context_features: int = 0,
    ) -> None:
        c, h, w = input_shape = _image_shape(shape, "Glow")
        levels: List[FlowLayer] = []
        for i in range(num_levels):
            c, h, w = 4 * c, h // 2, w // 2
            steps: List[FlowLayer] = [Squeeze()]
            steps += [
                GlowStep(c, hidden_channels, scale=scale, lu=lu, context_features=context_features, parity=k % 2)
                for k in range(depth)
            ]
            if i < num_levels - 1 and split_prior:
                # MultiScaleFlow factors out the first c // 2 channels: condition on the rest (channel_mask parity 1)
                steps.append(AffineCoupling(channel_mask(c, 1), nn.Conv2d(c, 2 * c, 3, padding=1), scale="exp"))
            if i == num_levels - 1 and learn_top:
                steps.append(ElementwiseAffine((c, h, w)))
            levels.append(FlowSequence(steps))
            c = c - c // 2
        super().__init__(input_shape, levels)


class LayerStack(FlowSequence):
    r"""``num_layers`` fresh copies of one vector flow layer (the class attribute ``layer``, built as
    ``layer(D)``), after a :class:`Flatten` when the data are not vectors:
    :math:`f = f_L \circ \dots \circ f_1`, :math:`\log|\det J_f| = \sum_l \log|\det J_{f_l}|`.

    Args:
        shape: event shape ``(D,)`` (anything else is flattened).
        num_layers: number of layers :math:`L`.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    layer: Callable[[int], FlowLayer]

    def __init__(self, shape: Sequence[int], num_layers: int = 16) -> None:
        layers, dim = _vector_prefix(shape)
        super().__init__(layers + [self.layer(dim) for _ in range(num_layers)])


class PlanarStack(LayerStack):
    r"""A :class:`LayerStack` of planar flows :math:`z = x + \hat u \tanh(w^\top x + b)` on vectors
    (closed-form density; sampling inverts each layer numerically).

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    layer = PlanarFlow


class RadialStack(LayerStack):
    r"""A :class:`LayerStack` of radial flows :math:`z = x + \beta (x - x_0)/(\alpha + \|x - x_0\|)` on vectors.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    layer = RadialFlow

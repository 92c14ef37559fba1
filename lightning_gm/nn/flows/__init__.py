r"""Normalizing-flow building blocks in plain torch (no Lightning).

Convention (see :mod:`lightning_gm.nn.flows.base`): every layer is a
:class:`FlowLayer` with ``forward(x, context=None) -> (z, log|det dz/dx|)`` (data -> noise)
and ``inverse(z, context=None) -> (x, log|det dx/dz|)`` (noise -> data); log-dets have
shape ``(B,)``. So :math:`\log p(x) = \log p_Z(z) + \texttt{log\_abs\_det}`.

References:
    Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
"""

from lightning_gm.nn.flows.architectures import (
    MAF,
    Flatten,
    Glow,
    MultiScaleRealNVP,
    PlanarStack,
    RadialStack,
    RealNVP,
    SplitConditioner,
)
from lightning_gm.nn.flows.autoregressive import InverseAutoregressiveFlow, MaskedAutoregressiveFlow, maf_flow
from lightning_gm.nn.flows.base import (
    SCALE_FUNCTIONS,
    FlowLayer,
    FlowSequence,
    InverseFlow,
    affine_log_scale,
    sum_except_batch,
)
from lightning_gm.nn.flows.coupling import (
    AffineCoupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    ResidualBlock,
    conv_conditioner,
    mlp_conditioner,
    realnvp_flow,
    resnet_conditioner,
    zero_init_last_layer,
)
from lightning_gm.nn.flows.elementwise import ElementwiseAffine, LogitTransform, PlanarFlow, RadialFlow, SigmoidTransform
from lightning_gm.nn.flows.glow import GlowStep, InvertibleConv1x1
from lightning_gm.nn.flows.made import MADE, MaskedLinear
from lightning_gm.nn.flows.multiscale import MultiScaleFlow, Squeeze, glow_multiscale, realnvp_multiscale
from lightning_gm.nn.flows.normalization import ActNorm, BatchNormFlow, set_batch_norm_statistics
from lightning_gm.nn.flows.permutation import ChannelShuffle, Permutation, RandomPermutation, ReversePermutation

__all__ = [
    "FlowLayer",
    "FlowSequence",
    "InverseFlow",
    "sum_except_batch",
    "affine_log_scale",
    "SCALE_FUNCTIONS",
    "PlanarFlow",
    "RadialFlow",
    "ActNorm",
    "BatchNormFlow",
    "set_batch_norm_statistics",
    "ElementwiseAffine",
    "LogitTransform",
    "SigmoidTransform",
    "Permutation",
    "ReversePermutation",
    "RandomPermutation",
    "ChannelShuffle",
    "AffineCoupling",
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
    "mlp_conditioner",
    "conv_conditioner",
    "resnet_conditioner",
    "ResidualBlock",
    "zero_init_last_layer",
    "realnvp_flow",
    "MaskedLinear",
    "MADE",
    "MaskedAutoregressiveFlow",
    "InverseAutoregressiveFlow",
    "maf_flow",
    "InvertibleConv1x1",
    "GlowStep",
    "Squeeze",
    "MultiScaleFlow",
    "glow_multiscale",
    "realnvp_multiscale",
    "Flatten",
    "SplitConditioner",
    "RealNVP",
    "MAF",
    "MultiScaleRealNVP",
    "Glow",
    "PlanarStack",
    "RadialStack",
]

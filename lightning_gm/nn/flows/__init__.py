r"""Normalizing-flow building blocks in plain torch (no Lightning).

Convention (see :mod:`lightning_gm.nn.flows.base`): every layer is a
:class:`FlowLayer` with ``forward(x, context=None) -> (z, log|det dz/dx|)`` (data -> noise)
and ``inverse(z, context=None) -> (x, log|det dx/dz|)`` (noise -> data); log-dets have
shape ``(B,)``. So :math:`\log p(x) = \log p_Z(z) + \texttt{log\_abs\_det}`.

References:
    Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
"""

from lightning_gm.nn.flows import (
    architectures,
    autoregressive,
    base,
    coupling,
    elementwise,
    glow,
    made,
    multiscale,
    normalization,
    permutation,
)
from lightning_gm.nn.flows.architectures import *  # noqa: F401,F403
from lightning_gm.nn.flows.autoregressive import *  # noqa: F401,F403
from lightning_gm.nn.flows.base import *  # noqa: F401,F403
from lightning_gm.nn.flows.coupling import *  # noqa: F401,F403
from lightning_gm.nn.flows.elementwise import *  # noqa: F401,F403
from lightning_gm.nn.flows.glow import *  # noqa: F401,F403
from lightning_gm.nn.flows.made import *  # noqa: F401,F403
from lightning_gm.nn.flows.multiscale import *  # noqa: F401,F403
from lightning_gm.nn.flows.normalization import *  # noqa: F401,F403
from lightning_gm.nn.flows.permutation import *  # noqa: F401,F403

#: The submodules' own ``__all__`` lists (each name is declared once, beside its code), base first.
__all__ = [
    name
    for module in (base, elementwise, normalization, permutation, coupling, made, autoregressive, glow, multiscale, architectures)
    for name in module.__all__
]

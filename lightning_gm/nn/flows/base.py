r"""Base classes and shared helpers for normalizing-flow layers (plain torch).

Conventions used by every layer of :mod:`lightning_gm.nn.flows`:

* ``forward(x, context=None) -> (z, log_abs_det)`` maps **data to noise**
  (the density-evaluation direction) and returns
  :math:`\log |\det \partial z / \partial x|`, one value per example, shape ``(B,)``.
* ``inverse(z, context=None) -> (x, log_abs_det)`` maps **noise to data**
  (the sampling direction) and returns
  :math:`\log |\det \partial x / \partial z|` (the log-det *of the inverse map*),
  shape ``(B,)``. For an exact inverse this equals minus the forward log-det
  evaluated at the returned ``x``.

With a base density :math:`p_Z`, the model density is

.. math::

    \log p_X(x) = \log p_Z(f(x)) + \log \left|\det \frac{\partial f(x)}{\partial x}\right| .

``context`` is an optional conditioning tensor (shape ``(B, C_ctx)``, or for
image layers also ``(B, C_ctx, H, W)``); unconditional layers ignore it.

Using flows as a VAE approximate posterior (Rezende & Mohamed 2015; Kingma et al.
2016): a posterior flow maps an initial sample :math:`z_0 \sim q_0(z_0 | x)` to
:math:`z_K` and :math:`\log q_K(z_K) = \log q_0(z_0) - \sum_k \log|\det \partial z_k / \partial z_{k-1}|`.
Call the *cheap* direction of each layer: ``PlanarFlow``/``RadialFlow``
``forward`` is closed-form; an IAF (``MaskedAutoregressiveFlow(..., inverse_autoregressive=True)``)
is single-pass in ``inverse`` (with ``context=h`` from the encoder). :class:`InverseFlow`
swaps the two directions of any layer, so e.g.
``FlowSequence([InverseFlow(PlanarFlow(d)), IAF, ...]).inverse(z0, context=h)``
returns ``(z_K, sum_k log|det dz_k/dz_{k-1}|)`` using only cheap directions.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
    Rozet et al., zuko (transforms API design).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FlowLayer",
    "FlowSequence",
    "InverseFlow",
    "sum_except_batch",
    "affine_log_scale",
    "SCALE_FUNCTIONS",
]

#: Names accepted by :func:`affine_log_scale`.
SCALE_FUNCTIONS: Tuple[str, ...] = ("tanh", "sigmoid", "exp")


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension except the first.

    Args:
        x: tensor of shape ``(B, ...)``.

    Returns:
        Tensor of shape ``(B,)``.
    """
    return x.reshape(x.shape[0], -1).sum(dim=1)


def affine_log_scale(raw: Tensor, kind: str = "tanh", clamp: float = 2.0) -> Tensor:
    r"""Map an unconstrained network output to a numerically stable log-scale.

    .. math::

        \text{tanh:}\quad & \log s = c \tanh(r / c) \quad (\text{soft clamp to } (-c, c),\ s=1 \text{ at } r=0) \\
        \text{sigmoid:}\quad & \log s = \log \sigma(r + 2) \quad (\text{Glow}; s \in (0,1),\ s \approx 0.881 \text{ at } r=0) \\
        \text{exp:}\quad & \log s = r \quad (\text{unconstrained, RealNVP without clamping})

    Args:
        raw: raw network output of any shape.
        kind: one of ``"tanh"``, ``"sigmoid"``, ``"exp"``.
        clamp: the soft-clamp bound :math:`c` for ``"tanh"``.

    Returns:
        Log-scale tensor with the shape of ``raw``.
    """
    if kind == "tanh":
        return clamp * torch.tanh(raw / clamp)
    if kind == "sigmoid":
        return F.logsigmoid(raw + 2.0)
    if kind == "exp":
        return raw
    raise ValueError(f"unknown scale function {kind!r}; expected one of {SCALE_FUNCTIONS}")


class FlowLayer(nn.Module):
    r"""Abstract invertible layer :math:`z = f(x)` with tractable log-determinant.

    Subclasses implement :meth:`forward` (data :math:`\to` noise) and :meth:`inverse`
    (noise :math:`\to` data); both return ``(output, log_abs_det)`` where
    ``log_abs_det`` has shape ``(B,)`` and is the log-absolute-determinant of the
    Jacobian of the map that was applied. Shape-changing layers (e.g. squeeze)
    override :meth:`forward_shape` / :meth:`inverse_shape`.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
    """

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:  # noqa: D401
        """Data -> noise.

        Args:
            x: input of shape ``(B, *event_shape)``.
            context: optional conditioning tensor ``(B, ...)``.

        Returns:
            ``(z, log|det dz/dx|)`` with ``z`` of shape ``(B, *forward_shape(event_shape))``
            and the log-det of shape ``(B,)``.
        """
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Noise -> data.

        Args:
            z: input of shape ``(B, *forward_shape(event_shape))``.
            context: optional conditioning tensor ``(B, ...)``.

        Returns:
            ``(x, log|det dx/dz|)``; the log-det has shape ``(B,)``.
        """
        raise NotImplementedError

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        """Event shape (without batch) of ``forward``'s output given the input event shape."""
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        """Event shape (without batch) of ``inverse``'s output given its input event shape."""
        return tuple(shape)


class FlowSequence(FlowLayer):
    r"""Composition :math:`f = f_K \circ \dots \circ f_1` of flow layers.

    .. math::

        \log\left|\det \frac{\partial f(x)}{\partial x}\right| = \sum_{k=1}^K
        \log\left|\det \frac{\partial f_k(h_{k-1})}{\partial h_{k-1}}\right|,
        \qquad h_0 = x,\ h_k = f_k(h_{k-1}).

    ``inverse`` applies the layers' inverses in reverse order. ``context`` is passed
    to every layer.

    Args:
        layers: the flow layers, in the data -> noise order.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    def __init__(self, layers: Iterable[FlowLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> FlowLayer:
        return self.layers[index]  # type: ignore[return-value]

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ladj = layer(x, context)
            total = total + ladj
        return x, total

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ladj = layer.inverse(z, context)
            total = total + ladj
        return z, total

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        out = tuple(shape)
        for layer in self.layers:
            out = layer.forward_shape(out)
        return out

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        out = tuple(shape)
        for layer in reversed(self.layers):
            out = layer.inverse_shape(out)
        return out


class InverseFlow(FlowLayer):
    r"""Swap the directions of a flow layer: :math:`g = f^{-1}`.

    ``InverseFlow(f).forward`` is ``f.inverse`` and vice versa; log-dets follow
    automatically since :math:`\log|\det J_{f^{-1}}(z)| = -\log|\det J_f(f^{-1}(z))|`.
    Use it to put the closed-form direction of a layer where it is needed (e.g. a
    planar flow in the sampling direction of a VAE posterior).

    Args:
        layer: the flow layer to invert.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
    """

    def __init__(self, layer: FlowLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return self.layer.inverse(x, context)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return self.layer(z, context)

    def forward_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return self.layer.inverse_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        return self.layer.forward_shape(shape)

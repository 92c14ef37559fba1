r"""Affine autoregressive flows: MAF and IAF as one layer with a direction flag.

Let :math:`(t, \log s) = \text{MADE}(y, h)` with :math:`t_i, s_i` depending only on
:math:`y_{<i}` (in the MADE ordering) and the context :math:`h`. The *parallel* map
(one MADE pass) with conditioner on its own input is

.. math::

    P(y) = y \odot e^{\log s(y_{<})} + t(y_{<}), \qquad
    \log\left|\det \frac{\partial P}{\partial y}\right| = \sum_i \log s_i ,

and its inverse :math:`P^{-1}(o)`: :math:`y_i = (o_i - t_i(y_{<i})) e^{-\log s_i(y_{<i})}`, computed in
:math:`D` sequential MADE passes (after pass :math:`k` the first :math:`k` coordinates in the
ordering are exact).

* **MAF** (``inverse_autoregressive=False``): ``forward`` (data -> noise, density) is
  :math:`z = P(x)` in one pass; ``inverse`` (sampling) takes :math:`D` passes. This is
  Papamakarios et al.'s :math:`z_i = (x_i - \mu_i)e^{-\alpha_i}` with
  :math:`\log s = -\alpha`, :math:`t = -\mu e^{-\alpha}`.
* **IAF** (``inverse_autoregressive=True``, or :class:`InverseAutoregressiveFlow`):
  ``inverse`` (noise -> data, sampling) is :math:`x = P(z)` in one pass — Kingma et al.'s
  :math:`z_t = \sigma_t \odot z_{t-1} + (1-\sigma_t)\odot m_t` up to reparameterisation
  (``scale="sigmoid"`` gives :math:`\sigma = \sigma(r + 2)`) — and ``forward`` takes :math:`D` passes.
  In a VAE posterior call ``iaf.inverse(z_prev, context=h)`` ->
  ``(z_next, log|det dz_next/dz_prev|)``.

References:
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer, FlowSequence, affine_log_scale
from lightning_gm.nn.flows.made import MADE, OrderingSpec
from lightning_gm.nn.flows.permutation import ReversePermutation

__all__ = ["MaskedAutoregressiveFlow", "InverseAutoregressiveFlow", "maf_flow"]


class MaskedAutoregressiveFlow(FlowLayer):
    r"""Affine autoregressive layer on vectors ``(B, D)`` (MAF, or IAF with the flag).

    .. math::

        \text{MAF: } z = x \odot e^{\log s(x_{<})} + t(x_{<}),\quad
        \log\left|\det\frac{\partial z}{\partial x}\right| = \sum_i \log s_i(x_{<i}); \qquad
        \text{IAF: } x = z \odot e^{\log s(z_{<})} + t(z_{<}).

    Args:
        features: dimension :math:`D`.
        hidden_features: MADE hidden widths.
        context_features: size of the conditioning context :math:`h` (0 = unconditional).
        ordering: MADE ordering (``"natural"``, ``"reversed"``, ``"random"``, explicit degrees).
        seed: seed for a random ordering.
        scale: log-scale map, ``"tanh"`` (soft clamp), ``"sigmoid"`` or ``"exp"``
            (see :func:`~lightning_gm.nn.flows.base.affine_log_scale`).
        clamp: soft-clamp bound for ``"tanh"``.
        activation: MADE hidden activation.
        inverse_autoregressive: ``False`` = MAF (fast density), ``True`` = IAF (fast sampling).
        made: inject a custom :class:`~lightning_gm.nn.flows.made.MADE` (must have
            ``features=D`` and ``num_params=2``; head 0 = shift, head 1 = raw log-scale);
            overrides the MADE arguments above.
        zero_init: zero the MADE output layer so the layer starts as the identity
            (for ``"tanh"``/``"exp"``).

    References:
        Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
        Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    def __init__(
        self,
        features: int,
        hidden_features: Sequence[int] = (64, 64),
        context_features: int = 0,
        ordering: OrderingSpec = "natural",
        seed: Optional[int] = None,
        scale: str = "tanh",
        clamp: float = 3.0,
        activation: Type[nn.Module] = nn.ReLU,
        inverse_autoregressive: bool = False,
        made: Optional[MADE] = None,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        affine_log_scale(torch.zeros(1), scale, clamp)  # validate
        if made is None:
            made = MADE(
                features,
                hidden_features,
                num_params=2,
                context_features=context_features,
                ordering=ordering,
                seed=seed,
                activation=activation,
                zero_init_output=zero_init,
            )
        elif made.features != features or made.num_params != 2:
            raise ValueError("the injected MADE must have features=D and num_params=2")
        elif zero_init:
            with torch.no_grad():
                made.output_layer.weight.zero_()
                made.output_layer.bias.zero_()
        self.made = made
        self.features = features
        self.scale = scale
        self.clamp = clamp
        self.inverse_autoregressive = inverse_autoregressive

    def _params(self, y: Tensor, context: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        out = self.made(y, context)
        return affine_log_scale(out[..., 1], self.scale, self.clamp), out[..., 0]

    def _parallel(self, y: Tensor, context: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        log_s, shift = self._params(y, context)
        return y * torch.exp(log_s) + shift, log_s.sum(dim=-1)

    def _sequential(self, o: Tensor, context: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        y = o
        log_s = o.new_zeros(o.shape)
        for _ in range(self.features):
            log_s, shift = self._params(y, context)
            y = (o - shift) * torch.exp(-log_s)
        return y, -log_s.sum(dim=-1)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if self.inverse_autoregressive:
            return self._sequential(x, context)
        return self._parallel(x, context)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if self.inverse_autoregressive:
            return self._parallel(z, context)
        return self._sequential(z, context)


class InverseAutoregressiveFlow(MaskedAutoregressiveFlow):
    r"""IAF: :class:`MaskedAutoregressiveFlow` with ``inverse_autoregressive=True``.

    .. math::

        x = z \odot e^{\log s(z_{<}, h)} + t(z_{<}, h)\ \ (\text{one pass, } \texttt{inverse}), \qquad
        \log\left|\det \frac{\partial x}{\partial z}\right| = \sum_i \log s_i .

    Same arguments as :class:`MaskedAutoregressiveFlow` (minus the flag); ``scale="sigmoid"``
    reproduces Kingma et al.'s gated update.

    References:
        Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    def __init__(self, features: int, hidden_features: Sequence[int] = (64, 64), **kwargs: object) -> None:
        kwargs.pop("inverse_autoregressive", None)
        super().__init__(features, hidden_features, inverse_autoregressive=True, **kwargs)  # type: ignore[arg-type]


def maf_flow(
    features: int,
    num_layers: int = 5,
    hidden_features: Sequence[int] = (64, 64),
    context_features: int = 0,
    inverse_autoregressive: bool = False,
    **kwargs: object,
) -> FlowSequence:
    """Stack ``num_layers`` autoregressive layers with :class:`ReversePermutation` in between.

    Args:
        features: dimension ``D``.
        num_layers: number of MAF/IAF layers.
        hidden_features: MADE hidden widths.
        context_features: context size (0 = unconditional).
        inverse_autoregressive: build IAF layers instead of MAF.
        **kwargs: forwarded to :class:`MaskedAutoregressiveFlow`.

    Returns:
        A :class:`~lightning_gm.nn.flows.base.FlowSequence` on ``(B, D)``.

    References:
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    """
    layers: list = []
    for i in range(num_layers):
        if i > 0:
            layers.append(ReversePermutation(features))
        layers.append(
            MaskedAutoregressiveFlow(
                features,
                hidden_features,
                context_features=context_features,
                inverse_autoregressive=inverse_autoregressive,
                **kwargs,  # type: ignore[arg-type]
            )
        )
    return FlowSequence(layers)

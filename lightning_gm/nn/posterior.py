r"""Normalizing flows inside a VAE's approximate posterior (plain torch).

An initial sample :math:`z_0 \sim q_0(z_0 \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))`
is pushed through invertible maps :math:`z_k = f_k(z_{k-1}; h)`, with :math:`h` a context vector from
the encoder, and

.. math::

    \log q_K(z_K \mid x) = \log q_0(z_0 \mid x) - \sum_{k=1}^K \log\left|\det \frac{\partial z_k}{\partial z_{k-1}}\right| .

A :class:`PosteriorFlow` is called as ``flow(z0, context) -> (z_K, sum_k log|det dz_k/dz_{k-1}|)``,
using only the cheap direction of each layer of :mod:`lightning_gm.nn.flows`: a planar layer's
``forward`` (closed form), an IAF layer's ``inverse`` (one MADE pass). Models receive a *factory*
``(latent_dim, context_features) -> PosteriorFlow`` from the config, so the flow is sized by the model.

References: Rezende & Mohamed (2015), Variational Inference with Normalizing Flows; Kingma, Salimans,
Jozefowicz, Chen, Sutskever & Welling (2016), Improved Variational Inference with Inverse Autoregressive Flow.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from lightning_gm.nn.flows import InverseAutoregressiveFlow, PlanarFlow, ReversePermutation

__all__ = ["PosteriorFlow", "PlanarPosterior", "IAFPosterior"]


class PosteriorFlow(nn.Module):
    """Base class: ``forward(z0 (..., L), context (..., C) or None) -> (z_K (..., L), log-det (...))``.

    ``context_features`` is the size of the context the flow wants from the encoder (0 = none).
    """

    context_features: int = 0

    def forward(self, z0: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def _flat(z: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor], tuple[int, ...]]:
    """Fold leading dimensions into one batch dimension (flow layers work on ``(B, L)``)."""
    lead = tuple(z.shape[:-1])
    zf = z.reshape(-1, z.shape[-1])
    cf = None
    if context is not None:
        cf = context.expand(*lead, context.shape[-1]).reshape(-1, context.shape[-1])
    return zf, cf, lead


class PlanarPosterior(PosteriorFlow):
    r"""``num_layers`` planar layers :math:`z_k = z_{k-1} + \hat u_k \tanh(w_k^\top z_{k-1} + b_k)`
    (:class:`~lightning_gm.nn.flows.PlanarFlow`, forward direction), with

    .. math::

        \log\left|\det \frac{\partial z_k}{\partial z_{k-1}}\right| = \log\left|1 + (1 - \tanh^2(w_k^\top z_{k-1} + b_k))\, w_k^\top \hat u_k\right| .

    The layer parameters are learned globally (shared by all ``x``), not output by the encoder as in
    Rezende & Mohamed's amortised version.

    Args:
        features: latent dimension (given by the model).
        context_features: ignored (planar layers are unconditional); given by the model.
        num_layers: number of planar layers ``K``.

    References: Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, section 4.1.
    """

    def __init__(self, features: int, context_features: int = 0, num_layers: int = 10) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PlanarFlow(features) for _ in range(num_layers))

    def forward(self, z0: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        z, _, lead = _flat(z0, None)
        total = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, ladj = layer(z)
            total = total + ladj
        return z.reshape(*lead, -1), total.reshape(lead)


class IAFPosterior(PosteriorFlow):
    r"""``num_layers`` inverse autoregressive layers conditioned on the encoder's context :math:`h`
    (:class:`~lightning_gm.nn.flows.InverseAutoregressiveFlow`, ``inverse`` direction, one MADE pass each),
    with the order of the latent dimensions reversed between layers:

    .. math::

        z_k = z_{k-1} \odot \sigma_k + m_k, \quad (m_k, \log\sigma_k) = \text{MADE}_k(z_{k-1}, h), \qquad
        \log\left|\det \frac{\partial z_k}{\partial z_{k-1}}\right| = \sum_i \log \sigma_{k,i}

    Args:
        features: latent dimension (given by the model).
        context_features: size of ``h`` (given by the model; the encoder outputs it).
        num_layers: number of IAF layers.
        hidden_features: MADE hidden widths.
        scale: log-scale map (``sigmoid`` = Kingma et al.'s gated update; ``tanh`` = soft clamp).

    References: Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow.
    """

    def __init__(self, features: int, context_features: int = 0, num_layers: int = 2,
                 hidden_features: Sequence[int] = (320, 320), scale: str = "sigmoid") -> None:
        super().__init__()
        self.context_features = context_features
        self.layers = nn.ModuleList(
            InverseAutoregressiveFlow(features, list(hidden_features), context_features=context_features, scale=scale)
            for _ in range(num_layers)
        )
        self.reverse = ReversePermutation(features)

    def forward(self, z0: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        z, ctx, lead = _flat(z0, context if self.context_features else None)
        total = z.new_zeros(z.shape[0])
        for i, layer in enumerate(self.layers):
            if i > 0:
                z, _ = self.reverse(z)  # a permutation: log-det 0
            z, ladj = layer.inverse(z, ctx)
            total = total + ladj
        return z.reshape(*lead, -1), total.reshape(lead)

"""Normalisation flow layers: :class:`ActNorm` (Glow's data-initialised per-channel affine map) and
:class:`BatchNormFlow` (Real NVP's batch normalisation as an invertible layer, with running statistics for
evaluation and :func:`set_batch_norm_statistics` to fix them on a data set).

Both follow :class:`~lightning_gm.nn.flows.base.FlowLayer`'s convention: ``forward`` = data -> noise returning
``log|det dz/dx|`` of shape ``(B,)``, ``inverse`` = noise -> data returning ``log|det dx/dz|``.

References:
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer

__all__ = ["ChannelAffine", "ActNorm", "BatchNormFlow", "set_batch_norm_statistics"]


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    """Reshape a ``(C,)`` tensor to ``(1, C, 1, ..., 1)`` for an input with ``ndim`` dims."""
    return t.view(1, -1, *([1] * (ndim - 2)))


class ChannelAffine(FlowLayer):
    r"""A per-channel affine map on ``(B, C)`` or ``(B, C, *spatial)`` (channels on dim 1), the form shared by
    :class:`ActNorm` and :class:`BatchNormFlow`:

    .. math::

        z = (x - m) \odot e^{s} + t, \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| = \Big(\prod \text{spatial}\Big)\sum_{c=1}^C s_c, \qquad
        x = (z - t) \odot e^{-s} + m .

    A subclass supplies the per-channel ``(m, s, t)`` of a call in :meth:`_affine` (``t = None`` for no shift).

    Args:
        num_features: number of channels :math:`C`.
        eps: the subclass's numerical guard (added to a standard deviation or a variance).

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018;
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(self, num_features: int, eps: float) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def _affine(self, x: Tensor, inverse: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """``(m, s, t)``, each ``(C,)`` (``t`` may be ``None``), for the call on ``x`` in the given direction."""
        raise NotImplementedError

    @staticmethod
    def _ladj(s: Tensor, x: Tensor) -> Tensor:
        return (s.sum() * int(math.prod(x.shape[2:]))).expand(x.shape[0])

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        m, s, t = self._affine(x, inverse=False)
        z = (x - _channel_view(m, x.dim())) * _channel_view(torch.exp(s), x.dim())
        return (z if t is None else z + _channel_view(t, x.dim())), self._ladj(s, x)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        m, s, t = self._affine(z, inverse=True)
        shifted = z if t is None else z - _channel_view(t, z.dim())
        return shifted * _channel_view(torch.exp(-s), z.dim()) + _channel_view(m, z.dim()), -self._ladj(s, z)


class ActNorm(ChannelAffine):
    r"""Activation normalisation with data-dependent initialisation (Glow).

    Per-channel affine map on ``(B, C)`` or ``(B, C, *spatial)`` (channels on dim 1):

    .. math::

        z = (x - \mu) \odot e^{-\log\sigma}\ \ (m = \mu,\ s = -\log\sigma,\ t = 0), \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| = -\Big(\prod \text{spatial}\Big)\sum_{c=1}^C \log\sigma_c .

    On the first call of ``forward`` in training mode while the ``initialized`` buffer
    is ``False``, :math:`\mu` and :math:`\log\sigma` are set to the per-channel mean and
    log standard deviation (biased, plus ``eps``) of that batch, so the output of the
    initialisation batch has zero mean and unit variance per channel. ``initialized`` is
    a buffer, so it is saved in / restored from ``state_dict``. ``inverse`` and eval-mode
    calls never initialise (the layer is the identity until initialised).

    Args:
        num_features: number of channels :math:`C`.
        eps: added to the standard deviation at initialisation.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    initialized: Tensor

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__(num_features=num_features, eps=eps)
        self.loc = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent initialisation from a batch ``x`` of shape ``(B, C, *spatial)``."""
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        std = x.std(dim=dims, unbiased=False)
        self.loc.copy_(mean)
        self.log_scale.copy_(torch.log(std + self.eps))
        self.initialized.fill_(True)

    def _affine(self, x: Tensor, inverse: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        if not inverse and self.training and not bool(self.initialized):
            self.initialize(x.detach())
        return self.loc, -self.log_scale, None


class BatchNormFlow(ChannelAffine):
    r"""Batch normalisation as an invertible layer (RealNVP, MAF), per channel on ``(B, C)`` or ``(B, C, *spatial)``.

    .. math::

        z = e^{\log\gamma} \odot \frac{x - m}{\sqrt{v}} + \beta\ \ (s = \log\gamma - \tfrac12\log v,\ t = \beta), \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| =
        \Big(\prod \text{spatial}\Big) \sum_{c=1}^C \Big[\log\gamma_c - \tfrac12 \log v_c\Big],

    with :math:`\log\gamma, \beta` learned (initially 0: the layer starts as plain standardisation). In
    training mode :math:`m, v` are the batch's per-channel mean and biased variance plus ``eps`` (gradients flow
    through them, as in Dinh et al. and Papamakarios et al.). In evaluation mode (and in ``inverse``) they are
    the mean and variance of the data set last passed through :func:`set_batch_norm_statistics` (the MAF
    authors' ``set_batch_norm_stats``: the statistics of the training set under the current parameters,
    recomputed before every validation), :math:`m = 0, v = 1` (their initial values) before that. The
    statistics are float64 buffers, saved in checkpoints.

    Args:
        num_features: number of channels :math:`C`.
        eps: added to the variance (``1e-5`` in the MAF code, ``1e-4`` in RealNVP's).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 3.7).
        Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017 (Sec. 3.4).
        Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    """

    stat_sum: Tensor
    stat_sum_sq: Tensor
    stat_count: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features=num_features, eps=eps)
        self.log_gamma = nn.Parameter(torch.zeros(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("stat_sum", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("stat_sum_sq", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("stat_count", torch.zeros((), dtype=torch.float64))
        #: accumulate the values seen in training mode into the statistics (set by set_batch_norm_statistics)
        self.collecting = False

    def reset_statistics(self) -> None:
        """Forget the statistics (evaluation then uses :math:`m = 0, v = 1` until new ones are gathered)."""
        self.stat_sum.zero_()
        self.stat_sum_sq.zero_()
        self.stat_count.zero_()

    def statistics(self) -> Tuple[Tensor, Tensor]:
        """The evaluation-mode ``(mean, variance + eps)``, each ``(C,)``, in the dtype of the parameters."""
        if float(self.stat_count) == 0:
            mean, var = torch.zeros_like(self.stat_sum), torch.ones_like(self.stat_sum)
        else:
            mean = self.stat_sum / self.stat_count
            var = (self.stat_sum_sq / self.stat_count - mean * mean).clamp_min(0.0)
        return mean.to(self.beta.dtype), (var + self.eps).to(self.beta.dtype)

    def _moments(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if not self.training:
            return self.statistics()
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = (x - _channel_view(mean, x.dim())).pow(2).mean(dim=dims) + self.eps
        if self.collecting:
            with torch.no_grad():
                flat = x.detach().transpose(0, 1).reshape(self.num_features, -1).double()
                self.stat_sum.add_(flat.sum(1))
                self.stat_sum_sq.add_(flat.pow(2).sum(1))
                self.stat_count.add_(flat.shape[1])
        return mean, var

    def _affine(self, x: Tensor, inverse: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        mean, var = self.statistics() if inverse else self._moments(x)
        return mean, self.log_gamma - 0.5 * torch.log(var), self.beta


@torch.no_grad()
def set_batch_norm_statistics(flow: nn.Module, batches: Iterable[Tensor],
                              context: Optional[Iterable[Optional[Tensor]]] = None) -> int:
    r"""Set the evaluation statistics of every :class:`BatchNormFlow` in ``flow`` from a data set.

    The data are passed through ``flow`` with only its batch-norm layers in training mode (every other module
    keeps its mode), so each layer normalises with its batch's moments, as in training, and accumulates the
    mean and variance of all the values it sees: with the training set this is the MAF authors'
    ``set_batch_norm_stats``. The modes are restored afterwards. Returns the number of examples passed.
    """
    layers = [m for m in flow.modules() if isinstance(m, BatchNormFlow)]
    modes = [(m, m.training) for m in layers]
    seen = 0
    try:
        for m in layers:
            m.reset_statistics()
            m.collecting = True
            m.train()
        contexts = iter(context) if context is not None else None
        for x in batches:
            flow(x, next(contexts) if contexts is not None else None)
            seen += x.shape[0]
    finally:
        for m, mode in modes:
            m.collecting = False
            m.train(mode)
    return seen

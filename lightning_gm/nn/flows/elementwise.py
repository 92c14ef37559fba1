r"""Element-wise and low-rank flow layers: planar, radial, ActNorm, batch norm, affine, logit, sigmoid.

All layers follow :class:`~lightning_gm.nn.flows.base.FlowLayer`'s convention:
``forward`` = data -> noise returning ``log|det dz/dx|`` of shape ``(B,)``,
``inverse`` = noise -> data returning ``log|det dx/dz|``.

Planar and radial flows are closed-form in ``forward``; their ``inverse`` is
*numerical* (planar: bisection + one Newton step on a scalar equation; radial:
closed-form root of a quadratic in the radius), accurate to float64 precision.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer, sum_except_batch

__all__ = [
    "PlanarFlow",
    "RadialFlow",
    "ActNorm",
    "BatchNormFlow",
    "set_batch_norm_statistics",
    "ElementwiseAffine",
    "LogitTransform",
    "SigmoidTransform",
]


class PlanarFlow(FlowLayer):
    r"""Planar flow on vectors ``(B, D)``.

    .. math::

        z = f(x) = x + \hat u \, \tanh(w^\top x + b), \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right|
            = \log\left|1 + (1 - \tanh^2(w^\top x + b))\, w^\top \hat u\right| .

    Invertibility is enforced by the reparameterisation

    .. math::

        \hat u = u + \left(m(w^\top u) - w^\top u\right)\frac{w}{\|w\|^2}, \qquad
        m(a) = -1 + \operatorname{softplus}(a),

    so that :math:`w^\top \hat u = m(w^\top u) > -1`.

    ``inverse`` is numerical: with :math:`c = w^\top z + b` the pre-activation
    :math:`a = w^\top x + b` solves the monotone scalar equation
    :math:`a + (w^\top \hat u)\tanh(a) = c`, whose root lies in
    :math:`[c - |w^\top\hat u|, c + |w^\top\hat u|]`. It is found by bisection
    (no gradient) followed by one Newton step (which carries the implicit-function
    gradient), then :math:`x = z - \hat u \tanh(a)`.

    Args:
        features: dimension :math:`D`.
        bisection_steps: number of bisection iterations of the numerical inverse.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015 (Appendix A.1).
    """

    def __init__(self, features: int, bisection_steps: int = 64) -> None:
        super().__init__()
        self.features = features
        self.bisection_steps = bisection_steps
        bound = 1.0 / math.sqrt(features)
        self.u = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> Tensor:
        r"""The constrained :math:`\hat u`, shape ``(D,)``, with :math:`w^\top \hat u > -1`."""
        wu = torch.dot(self.w, self.u)
        m = -1.0 + F.softplus(wu)
        return self.u + (m - wu) * self.w / self.w.pow(2).sum().clamp_min(1e-12)

    def _ladj(self, a: Tensor, wu: Tensor) -> Tensor:
        return torch.log(torch.abs(1.0 + (1.0 - torch.tanh(a) ** 2) * wu))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        u_hat = self.u_hat()
        a = x @ self.w + self.b
        z = x + torch.tanh(a).unsqueeze(-1) * u_hat
        return z, self._ladj(a, torch.dot(self.w, u_hat))

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        u_hat = self.u_hat()
        wu = torch.dot(self.w, u_hat)
        c = z @ self.w + self.b
        with torch.no_grad():
            half = wu.abs() + 1e-12
            lo, hi = c - half, c + half
            for _ in range(self.bisection_steps):
                mid = 0.5 * (lo + hi)
                above = mid + wu * torch.tanh(mid) > c
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            a0 = 0.5 * (lo + hi)
        # One Newton step from the (detached) root: exact value, implicit gradient.
        g = a0 + wu * torch.tanh(a0) - c
        dg = (1.0 + wu * (1.0 - torch.tanh(a0) ** 2)).clamp_min(1e-12)
        a = a0 - g / dg
        x = z - torch.tanh(a).unsqueeze(-1) * u_hat
        return x, -self._ladj(a, wu)


class RadialFlow(FlowLayer):
    r"""Radial flow on vectors ``(B, D)``.

    .. math::

        z = f(x) = x + \beta\, h(\alpha, r)\,(x - x_0), \quad r = \|x - x_0\|, \quad
        h(\alpha, r) = \frac{1}{\alpha + r},

    .. math::

        \log\left|\det \frac{\partial z}{\partial x}\right|
            = (D - 1)\log(1 + \beta h) + \log(1 + \beta h + \beta h'(r) r)
            = (D - 1)\log(1 + \beta h) + \log(1 + \alpha\beta h^2).

    Constraints: :math:`\alpha = \operatorname{softplus}(\tilde\alpha) > 0` and
    :math:`\beta = -\alpha + \operatorname{softplus}(\tilde\beta) > -\alpha`
    (invertibility condition :math:`\beta \ge -\alpha`).

    ``inverse``: :math:`z - x_0` is parallel to :math:`x - x_0` and
    :math:`r_z = \|z - x_0\| = r (1 + \beta/(\alpha + r))`, so :math:`r` is the positive root of
    :math:`r^2 + (\alpha + \beta - r_z) r - \alpha r_z = 0` (computed in a cancellation-free
    form), then :math:`x = x_0 + (z - x_0)/(1 + \beta h(\alpha, r))`.

    Args:
        features: dimension :math:`D`.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015 (Appendix A.2).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.x0 = nn.Parameter(torch.randn(features) / math.sqrt(features))
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(torch.zeros(()))

    def alpha_beta(self) -> Tuple[Tensor, Tensor]:
        r"""Constrained :math:`(\alpha, \beta)` with :math:`\alpha > 0,\ \beta > -\alpha`."""
        alpha = F.softplus(self.alpha_raw)
        beta = -alpha + F.softplus(self.beta_raw)
        return alpha, beta

    def _ladj(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1.0 / (alpha + r)
        d = self.features
        return (d - 1) * torch.log1p(beta * h) + torch.log1p(alpha * beta * h**2)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        alpha, beta = self.alpha_beta()
        diff = x - self.x0
        r = diff.norm(dim=-1)
        h = 1.0 / (alpha + r)
        z = x + (beta * h).unsqueeze(-1) * diff
        return z, self._ladj(r, alpha, beta)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        alpha, beta = self.alpha_beta()
        diff = z - self.x0
        rz = diff.norm(dim=-1)
        bq = alpha + beta - rz
        disc = torch.sqrt(bq**2 + 4.0 * alpha * rz)
        # Positive root of r^2 + bq r - alpha rz = 0 without catastrophic cancellation.
        r_neg = 0.5 * (disc - bq)
        r_pos = 2.0 * alpha * rz / (bq + disc).clamp_min(1e-300 if z.dtype == torch.float64 else 1e-30)
        r = torch.where(bq > 0, r_pos, r_neg)
        x = self.x0 + diff / (1.0 + beta / (alpha + r)).unsqueeze(-1)
        return x, -self._ladj(r, alpha, beta)


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    """Reshape a ``(C,)`` tensor to ``(1, C, 1, ..., 1)`` for an input with ``ndim`` dims."""
    return t.view(1, -1, *([1] * (ndim - 2)))


class ActNorm(FlowLayer):
    r"""Activation normalisation with data-dependent initialisation (Glow).

    Per-channel affine map on ``(B, C)`` or ``(B, C, *spatial)`` (channels on dim 1):

    .. math::

        z = (x - \mu) \odot e^{-\log\sigma}, \qquad
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
        super().__init__()
        self.num_features = num_features
        self.eps = eps
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

    def _ladj(self, x: Tensor) -> Tensor:
        spatial = int(math.prod(x.shape[2:]))
        return (-self.log_scale.sum() * spatial).expand(x.shape[0])

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x.detach())
        loc = _channel_view(self.loc, x.dim())
        log_scale = _channel_view(self.log_scale, x.dim())
        z = (x - loc) * torch.exp(-log_scale)
        return z, self._ladj(x)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        loc = _channel_view(self.loc, z.dim())
        log_scale = _channel_view(self.log_scale, z.dim())
        x = z * torch.exp(log_scale) + loc
        return x, -self._ladj(z)


class BatchNormFlow(FlowLayer):
    r"""Batch normalisation as an invertible layer (RealNVP, MAF), per channel on ``(B, C)`` or ``(B, C, *spatial)``.

    .. math::

        z = e^{\log\gamma} \odot \frac{x - m}{\sqrt{v}} + \beta, \qquad
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
        super().__init__()
        self.num_features = num_features
        self.eps = eps
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

    def _ladj(self, var: Tensor, x: Tensor) -> Tensor:
        spatial = int(math.prod(x.shape[2:]))
        return ((self.log_gamma - 0.5 * torch.log(var)).sum() * spatial).expand(x.shape[0])

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        mean, var = self._moments(x)
        scale = _channel_view(torch.exp(self.log_gamma - 0.5 * torch.log(var)), x.dim())
        z = (x - _channel_view(mean, x.dim())) * scale + _channel_view(self.beta, x.dim())
        return z, self._ladj(var, x)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        mean, var = self.statistics()
        scale = _channel_view(torch.exp(0.5 * torch.log(var) - self.log_gamma), z.dim())
        x = (z - _channel_view(self.beta, z.dim())) * scale + _channel_view(mean, z.dim())
        return x, -self._ladj(var, z)


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


class ElementwiseAffine(FlowLayer):
    r"""Learnable element-wise affine map over the whole event shape.

    .. math::

        z = (x - \mu) \odot e^{-\log\sigma}, \qquad
        \log\left|\det \frac{\partial z}{\partial x}\right| = -\sum_i \log\sigma_i ,

    with :math:`\mu, \log\sigma` of the event shape, initialised to the identity.

    Args:
        shape: event shape (an ``int`` for vectors, e.g. ``(C, H, W)`` for images).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(self, shape: Union[int, Sequence[int]]) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        x = z * torch.exp(self.log_scale) + self.loc
        return x, self.log_scale.sum().expand(z.shape[0])


class LogitTransform(FlowLayer):
    r"""Logit pre-processing for dequantised data in :math:`[0, 1]` (RealNVP).

    .. math::

        s = \alpha + (1 - 2\alpha)\, x, \qquad y = \operatorname{logit}(s) = \log s - \log(1 - s),

    .. math::

        \log\left|\det \frac{\partial y}{\partial x}\right|
            = \sum_{i=1}^{D} \Big[\log(1 - 2\alpha) - \log s_i - \log(1 - s_i)\Big].

    Inverse: :math:`x = (\sigma(y) - \alpha)/(1 - 2\alpha)` with log-det
    :math:`\sum_i [\log\sigma(y_i) + \log\sigma(-y_i) - \log(1-2\alpha)]`.

    This log-det must be included in the model log-likelihood for bits/dim to be
    correct: with :math:`x = (k + u)/256` (:math:`k\in\{0..255\}^D`, :math:`u\sim U[0,1)^D`),
    :math:`\log p_X(x) = \log p_Z(f(y)) + \log|\det J_f(y)| + \text{this log-det}` and
    :math:`\text{bpd} = -(\log p_X(x) - D\log 256)/(D \log 2)`.

    Args:
        alpha: boundary margin :math:`\alpha \in [0, 1/2)`, keeping the logit finite at 0 and 1
            (RealNVP used 0.05 for CIFAR-10; ``1e-6`` is common for MNIST).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (Sec. 4.1).
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    """

    def __init__(self, alpha: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError("alpha must be in [0, 0.5)")
        self.alpha = alpha

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        s = self.alpha + (1.0 - 2.0 * self.alpha) * x
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        y = log_s - log_1ms
        ladj = sum_except_batch(math.log1p(-2.0 * self.alpha) - log_s - log_1ms)
        return y, ladj

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        x = (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
        ladj = sum_except_batch(F.logsigmoid(z) + F.logsigmoid(-z) - math.log1p(-2.0 * self.alpha))
        return x, ladj


class SigmoidTransform(FlowLayer):
    r"""Element-wise sigmoid, mapping :math:`\mathbb{R}` to :math:`(0, 1)` (inverse of a logit).

    .. math::

        y = \sigma(x), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_i \big[\log\sigma(x_i) + \log\sigma(-x_i)\big].

    Inverse: :math:`x = \log y - \log(1 - y)` with log-det :math:`-\sum_i[\log y_i + \log(1 - y_i)]`.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", JMLR 2021.
    """

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return torch.sigmoid(x), sum_except_batch(F.logsigmoid(x) + F.logsigmoid(-x))

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        log_y, log_1my = torch.log(z), torch.log1p(-z)
        return log_y - log_1my, -sum_except_batch(log_y + log_1my)

"""Element-wise and low-rank flow layers: planar, radial, ActNorm, batch norm, affine, logit, sigmoid.

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
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gm.nn.flows.base import FlowLayer, sum_except_batch

__all__ = ["PlanarFlow", "RadialFlow", "ElementwiseAffine", "LogitTransform", "SigmoidTransform"]


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

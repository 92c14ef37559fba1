r"""Linear-Gaussian latent models (probabilistic PCA, factor analysis): the exact maths in plain torch.

The model is

.. math::

    z \sim \mathcal N(0, I_L), \qquad x \mid z \sim \mathcal N(W z + \mu, \Psi), \qquad
    p(x) = \mathcal N(x;\ \mu,\ C), \quad C = W W^\top + \Psi,

with :math:`\Psi = \sigma^2 I` for probabilistic PCA and :math:`\Psi = \operatorname{diag}\psi` for
factor analysis. Everything here works in :math:`O(D L^2)` through the Woodbury identity and the
matrix determinant lemma, with :math:`M = I_L + W^\top \Psi^{-1} W`:

.. math::

    C^{-1} = \Psi^{-1} - \Psi^{-1} W M^{-1} W^\top \Psi^{-1}, \qquad
    \log|C| = \log|M| + \textstyle\sum_i \log \psi_i .

The maximum-likelihood PPCA solution is closed form (Tipping & Bishop 1999): with the sample
covariance's eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_D` and eigenvectors :math:`U`,

.. math::

    \sigma^2_{\text{ML}} = \frac{1}{D - L} \sum_{j > L} \lambda_j, \qquad
    W_{\text{ML}} = U_L (\Lambda_L - \sigma^2_{\text{ML}} I)^{1/2} R

(any rotation :math:`R`; we take :math:`R = I`). Factor analysis has no closed form; its EM
iteration on the sample covariance :math:`S` (Rubin & Thayer 1982) increases the likelihood
monotonically:

.. math::

    G = M^{-1}, \quad B = G W^\top \Psi^{-1}, \quad
    W' = S B^\top (G + B S B^\top)^{-1}, \quad \Psi' = \operatorname{diag}(S - W' B S).

The average log-likelihood of a data set depends on it only through its mean and covariance:
:math:`\bar\ell = -\tfrac12 [D \log 2\pi + \log|C| + \operatorname{tr}(C^{-1} S) + (\bar x-\mu)^\top C^{-1} (\bar x - \mu)]`.

References: Tipping & Bishop (1999), Probabilistic Principal Component Analysis, JRSS B 61(3);
Rubin & Thayer (1982), EM algorithms for ML factor analysis, Psychometrika 47(1);
Bishop (2006), Pattern Recognition and Machine Learning, sections 12.2.1-12.2.4.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

import torch
from torch import Tensor

from lightning_gm.nn.distributions import LOG_2PI

__all__ = [
    "Moments",
    "StreamingMoments",
    "log_marginal",
    "average_log_likelihood",
    "posterior",
    "sample",
    "ppca_ml",
    "pca",
    "fa_em_step",
    "fa_init",
]


class Moments(NamedTuple):
    """Sufficient statistics of a data set: ``n`` examples, ``mean`` ``(D,)``, ML ``cov`` ``(D, D)`` (divided by ``n``)."""

    n: int
    mean: Tensor
    cov: Tensor


class StreamingMoments:
    """Mean and covariance of a data set seen in batches, accumulated in float64.

    Sums are taken about a shift (the first batch's mean) so the covariance does not suffer the
    cancellation of :math:`E[xx^\\top] - \\bar x \\bar x^\\top` on data far from the origin.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: Optional[Tensor] = None
        self.s1: Optional[Tensor] = None
        self.s2: Optional[Tensor] = None

    def update(self, x: Tensor) -> None:
        """Add a batch ``(B, ...)`` (flattened to ``(B, D)``)."""
        x = x.detach().reshape(x.shape[0], -1).double()
        if self.shift is None:
            self.shift = x.mean(0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        d = x - self.shift
        self.s1 += d.sum(0)
        self.s2 += d.T @ d
        self.n += x.shape[0]

    def compute(self) -> Moments:
        """The :class:`Moments` of everything seen so far."""
        if self.n == 0 or self.shift is None or self.s1 is None or self.s2 is None:
            raise ValueError("StreamingMoments.compute: no data seen")
        m = self.s1 / self.n
        cov = self.s2 / self.n - torch.outer(m, m)
        return Moments(self.n, self.shift + m, 0.5 * (cov + cov.T))

    @classmethod
    def of(cls, batches: Iterable[Tensor]) -> Moments:
        """Moments of an iterable of batches (``(x, y)`` pairs are accepted: ``x`` is used)."""
        acc = cls()
        for b in batches:
            acc.update(b[0] if isinstance(b, (tuple, list)) else b)
        return acc.compute()


def _woodbury(W: Tensor, psi: Tensor) -> tuple[Tensor, Tensor]:
    """``(Psi^-1 W, cholesky(M))`` with ``M = I + W' Psi^-1 W``."""
    pw = W / psi[:, None]
    M = torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ pw
    return pw, torch.linalg.cholesky(M)


def log_marginal(x: Tensor, W: Tensor, mu: Tensor, psi: Tensor) -> Tensor:
    r"""Exact :math:`\log \mathcal N(x; \mu, W W^\top + \operatorname{diag}\psi)` per example.

    Args:
        x: ``(..., D)``.
        W: ``(D, L)`` loadings.
        mu: ``(D,)`` mean.
        psi: ``(D,)`` noise variances (``sigma^2 * ones`` for PPCA).

    Returns:
        ``(...)`` log-densities, in :math:`O(D L^2)` per example.
    """
    r = x - mu
    pw, chol = _woodbury(W, psi)
    a = torch.cholesky_solve((r @ pw).unsqueeze(-1), chol).squeeze(-1)  # M^-1 W' Psi^-1 r
    maha = (r * r / psi).sum(-1) - ((r @ pw) * a).sum(-1)
    logdet = 2 * torch.log(torch.diagonal(chol)).sum() + torch.log(psi).sum()
    return -0.5 * (W.shape[0] * LOG_2PI + logdet + maha)


def average_log_likelihood(moments: Moments, W: Tensor, mu: Tensor, psi: Tensor) -> Tensor:
    r"""Mean :math:`\log p(x)` over a data set with the given :class:`Moments` (scalar), in :math:`O(D^2 L)`."""
    S = moments.cov.to(W)
    pw, chol = _woodbury(W, psi)
    # tr(C^-1 S) = tr(Psi^-1 S) - tr(M^-1 W' Psi^-1 S Psi^-1 W)
    sp = S @ pw  # (D, L)
    tr = (torch.diagonal(S) / psi).sum() - torch.trace(torch.cholesky_solve(pw.T @ sp, chol))
    # log N(mean; mu, C) = -(D log 2pi + log|C| + d' C^-1 d) / 2 carries every term but the trace
    return log_marginal(moments.mean.to(W), W, mu, psi) - 0.5 * tr


def posterior(x: Tensor, W: Tensor, mu: Tensor, psi: Tensor) -> tuple[Tensor, Tensor]:
    r"""Posterior :math:`p(z|x) = \mathcal N(M^{-1} W^\top \Psi^{-1}(x - \mu), M^{-1})`: ``(mean (..., L), cov (L, L))``."""
    pw, chol = _woodbury(W, psi)
    mean = torch.cholesky_solve(((x - mu) @ pw).unsqueeze(-1), chol).squeeze(-1)
    return mean, torch.cholesky_inverse(chol)


def sample(n: int, W: Tensor, mu: Tensor, psi: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` ancestral samples ``x = W z + mu + sqrt(psi) * eps``: ``(n, D)``."""
    z = torch.randn(n, W.shape[1], dtype=W.dtype, device=W.device, generator=generator)
    eps = torch.randn(n, W.shape[0], dtype=W.dtype, device=W.device, generator=generator)
    return z @ W.T + mu + eps * psi.sqrt()


def pca(cov: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenvalues (descending, ``(D,)`` all of them) and eigenvectors ``(D, k)`` of a covariance."""
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0), evecs.flip(1)
    return evals, evecs[:, :k]


def ppca_ml(moments: Moments, latent_dim: int, min_variance: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    r"""Closed-form maximum-likelihood PPCA (Tipping & Bishop 1999).

    Args:
        moments: the data's :class:`Moments`.
        latent_dim: :math:`L < D`.
        min_variance: floor on :math:`\sigma^2` (data with exactly ``L`` directions of variance).

    Returns:
        ``(W (D, L), mu (D,), sigma2 ())``: ``W = U_L (Lambda_L - sigma^2 I)^{1/2}``,
        ``sigma^2`` the mean discarded eigenvalue.
    """
    D = moments.cov.shape[0]
    if not 0 < latent_dim < D:
        raise ValueError(f"PPCA latent_dim must be in [1, {D - 1}] for {D}-dimensional data, got {latent_dim}")
    evals, U = pca(moments.cov, latent_dim)
    sigma2 = evals[latent_dim:].clamp(min=0).mean().clamp(min=min_variance)
    W = U * (evals[:latent_dim] - sigma2).clamp(min=0).sqrt()
    return W, moments.mean.clone(), sigma2


def fa_init(moments: Moments, latent_dim: int, min_variance: float = 1e-6) -> tuple[Tensor, Tensor]:
    """A PCA-based start for factor analysis: ``(W (D, L), psi (D,))``."""
    W, _, sigma2 = ppca_ml(moments, latent_dim, min_variance)
    psi = (torch.diagonal(moments.cov) - (W * W).sum(1)).clamp(min=max(min_variance, 1e-3 * float(sigma2)))
    return W, psi


def fa_em_step(cov: Tensor, W: Tensor, psi: Tensor, min_variance: float = 1e-6) -> tuple[Tensor, Tensor]:
    r"""One EM iteration of factor analysis on the sample covariance :math:`S` (``cov``).

    .. math::

        B = M^{-1} W^\top \Psi^{-1}, \quad W' = S B^\top (M^{-1} + B S B^\top)^{-1}, \quad
        \Psi' = \operatorname{diag}(S - W' B S) \vee \text{min\_variance}.

    Returns ``(W', psi')``; the log-likelihood never decreases (up to the variance floor).
    """
    pw, chol = _woodbury(W, psi)
    G = torch.cholesky_inverse(chol)
    B = G @ pw.T  # (L, D)
    SB = cov @ B.T  # (D, L)
    Ezz = G + B @ SB
    W_new = torch.linalg.solve(Ezz, SB.T).T
    psi_new = (torch.diagonal(cov) - (W_new * SB).sum(1)).clamp(min=min_variance)
    return W_new, psi_new


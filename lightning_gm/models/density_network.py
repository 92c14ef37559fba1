r"""The density network (MacKay 1995): a neural decoder under a Gaussian prior, fitted by Monte Carlo
over prior samples.

.. math::

    p(x) = \mathbb E_{p(z)}\, p(x \mid z) \approx \hat p_S(x) = \frac1S \sum_{s=1}^S p(x \mid z_s),
    \qquad z_s \sim p(z) = \mathcal N(0, I),

    \log \hat p_S(x) = \operatorname{log\text{-}mean\text{-}exp}_s \log p(x \mid z_s) ,

which is the importance-weighted estimator with the prior as proposal (:math:`q = p(z)`, so the
log-weights are :math:`\log p(x|z_s)`), and, like it, a stochastic lower bound whose expectation
rises to :math:`\log p(x)` as :math:`S \to \infty`. Training maximises it directly; the test uses
``test_samples`` prior samples through :func:`~lightning_gm.estimators.importance.importance_weighted_log_prob`
(estimator ``prior-S``).

Why it fails in high dimension: in a high-dimensional data space almost every prior sample explains
a given :math:`x` astronomically worse than the best one, so the normalised weights
:math:`w_s \propto p(x|z_s)` put all their mass on one sample. The logs show it: the effective
sample size

.. math::

    \mathrm{ESS} = \frac{(\sum_s w_s)^2}{\sum_s w_s^2} \in [1, S]

(``{stage}/ess``, and ``{stage}/max_weight``, the largest normalised weight) collapses to about 1 on
MNIST, so the gradient comes from one sample and the estimate is far below :math:`\log p(x)`; a VAE
replaces the prior by an encoder :math:`q(z|x)` that puts the samples where :math:`p(x|z)` is large.
The same ``S`` prior samples are shared by the examples of a batch (one decoder pass per batch).

References: MacKay (1995), Bayesian neural networks and density networks, NIM A 354; MacKay & Gibbs
(1999), Density networks; Burda, Grosse & Salakhutdinov (2016) (the importance-weighted bound).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from lightning_gm.estimators.importance import importance_weighted_log_prob, log_mean_exp
from lightning_gm.models.base import GenerativeModel
from lightning_gm.nn.likelihoods import BernoulliLikelihood, Likelihood
from lightning_gm.nn.mlp import MLP

__all__ = ["DensityNetwork", "effective_sample_size"]


def effective_sample_size(log_weights: Tensor, dim: int = 0) -> Tensor:
    r"""Kish's effective sample size of unnormalised log-weights along ``dim``:
    :math:`(\sum w)^2 / \sum w^2 = \exp(2\,\mathrm{lse}(\log w) - \mathrm{lse}(2 \log w))`."""
    return torch.exp(2 * torch.logsumexp(log_weights, dim) - torch.logsumexp(2 * log_weights, dim))


class DensityNetwork(GenerativeModel):
    """Neural decoder :math:`p(x|z)`, prior :math:`\\mathcal N(0, I)`, trained on the prior-sample estimate.

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: dimension of ``z``.
        hidden: hidden widths of the decoder (from ``z`` to ``x``).
        activation: hidden activation (``gated``: gated dense units).
        init: weight initialisation of the decoder (:data:`~lightning_gm.nn.mlp.INITS`; ``torch`` = PyTorch's
            default; ``conf/density_network.yaml`` uses ``xavier_uniform`` as the VAE it is compared with).
        likelihood: observation model :math:`p(x|z)` (default Bernoulli).
        num_samples: prior samples :math:`S` per training batch.
        val_samples: prior samples for the validation estimate (``val/nll``, ``val/ess``).
        test_samples: prior samples for ``test/nll``.
        chunk_size: prior samples decoded and scored at once (bounds memory: ``chunk * B * D``).
        **kwargs: ``optimizer`` (default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.
    """

    family = "density_network"
    monitor = "val/nll"
    monitor_mode = "min"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_dim: int = 10,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        init: str = "torch",
        likelihood: Optional[Likelihood] = None,
        num_samples: int = 100,
        val_samples: int = 1000,
        test_samples: int = 5000,
        chunk_size: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.save_hyperparameters(ignore=["likelihood", "optimizer", "lr_scheduler"])
        for key, value in (("num_samples", num_samples), ("val_samples", val_samples),
                           ("test_samples", test_samples), ("chunk_size", chunk_size)):
            if value < 1:
                raise ValueError(f"model.init_args.{key} must be >= 1, got {value}")
        self.latent_dim = latent_dim
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()
        self.decoder = MLP([latent_dim, *hidden, self.likelihood.num_params(self.data_dim)], activation, init)
        self.num_samples, self.val_samples, self.test_samples = num_samples, val_samples, test_samples
        self.chunk_size = chunk_size

    def log_weights(self, x: Tensor, n: int) -> Tensor:
        r"""``log p(x | z_s)`` for ``n`` prior samples shared by the batch: ``(n, B)`` (decoded in chunks)."""
        flat = x.flatten(1)
        out = []
        for start in range(0, n, self.chunk_size):
            z = torch.randn(min(self.chunk_size, n - start), self.latent_dim, device=flat.device, dtype=flat.dtype)
            params = self.decoder(z)  # (c, P)
            out.append(self.likelihood.log_prob(flat[None], params[:, None].expand(-1, flat.shape[0], -1)))
        return torch.cat(out)

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        n = self.num_samples if stage == "train" else self.val_samples
        if stage == "train":
            lw = self.log_weights(x, n)
        else:
            with torch.no_grad():
                lw = self.log_weights(x, n)
        log_px = log_mean_exp(lw, 0)
        lw = lw.detach()
        return {
            "loss": -log_px.mean(),
            "nll": -log_px.mean().detach(),
            "ess": effective_sample_size(lw).mean(),
            "max_weight": torch.softmax(lw, 0).max(0).values.mean(),
        }

    @property
    def estimator(self) -> str:
        return f"prior-{self.test_samples}"

    def log_prob(self, x: Tensor) -> Tensor:
        return importance_weighted_log_prob(self.log_weights, x, self.test_samples, self.chunk_size).log_prob.to(x.dtype)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        z = torch.randn(n, self.latent_dim, device=self.device)
        return self.likelihood.mean(self.decoder(z)).view(n, *self.data_shape)


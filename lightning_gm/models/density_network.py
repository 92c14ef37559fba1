r"""The density network (MacKay 1995): a neural decoder under a Gaussian prior, fitted by Monte Carlo
over prior samples.

.. math::

    p(x) = \mathbb E_{p(z)}\, p(x \mid z) \approx \hat p_S(x) = \frac1S \sum_{s=1}^S p(x \mid z_s),
    \qquad z_s \sim p(z) = \mathcal N(0, I),

    \log \hat p_S(x) = \operatorname{log\text{-}mean\text{-}exp}_s \log p(x \mid z_s) ,

which is the importance-weighted estimator with the prior as proposal (:math:`q = p(z)`, so the
log-weights are :math:`\log p(x|z_s)`), and, like it, a stochastic lower bound whose expectation
rises to :math:`\log p(x)` as :math:`S \to \infty`. Training maximises it directly; the test uses
``samples.test`` prior samples through :func:`~lightning_gm.estimators.importance.importance_weighted_log_prob`
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

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor

from lightning_gm.estimators.importance import importance_weighted_log_prob, log_mean_exp
from lightning_gm.groups import ParameterGroup
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.nn.likelihoods import BernoulliLikelihood, Likelihood
from lightning_gm.nn.mlp import MLP

__all__ = ["DensityNetwork", "PriorSamples", "effective_sample_size"]


@dataclass(frozen=True)
class PriorSamples(ParameterGroup):
    r"""How many prior samples :math:`z_s \sim \mathcal N(0, I)` the estimate :math:`\log \frac1S \sum_s p(x \mid z_s)`
    uses at each stage, and how many are decoded at once.

    Args:
        train: :math:`S` per training batch, >= 1.
        val: :math:`S` of the validation estimate (``val/nll``, ``val/ess``), >= 1.
        test: :math:`S` of ``test/nll`` (the estimator label ``prior-<test>``), >= 1.
        chunk: samples decoded and scored at once (bounds memory: ``chunk * B * D``), >= 1.

    References:
        MacKay (1995), Bayesian neural networks and density networks.
    """

    key: ClassVar[str] = "model.init_args.samples"
    train: int = 100
    val: int = 1000
    test: int = 5000
    chunk: int = 100

    def __post_init__(self) -> None:
        for name in ("train", "val", "test", "chunk"):
            self.require(name, getattr(self, name) >= 1, ">= 1")


def effective_sample_size(log_weights: Tensor, dim: int = 0) -> Tensor:
    r"""Kish's effective sample size of unnormalised log-weights along ``dim``:
    :math:`(\sum w)^2 / \sum w^2 = \exp(2\,\mathrm{lse}(\log w) - \mathrm{lse}(2 \log w))`."""
    return torch.exp(2 * torch.logsumexp(log_weights, dim) - torch.logsumexp(2 * log_weights, dim))


class DensityNetwork(GroupedHyperparameters, GenerativeModel):
    """Neural decoder :math:`p(x|z)`, prior :math:`\\mathcal N(0, I)`, trained on the prior-sample estimate.

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: dimension of ``z``.
        hidden: hidden widths of the decoder (from ``z`` to ``x``).
        activation: hidden activation (``gated``: gated dense units).
        init: weight initialisation of the decoder (:data:`~lightning_gm.nn.mlp.INITS`; ``torch`` = PyTorch's
            default; ``conf/density_network.yaml`` uses ``xavier_uniform`` as the VAE it is compared with).
        likelihood: observation model :math:`p(x|z)` (default Bernoulli).
        samples: the prior samples of each stage's estimate (:class:`PriorSamples`: ``train``, ``val``, ``test``,
            ``chunk``).
        **kwargs: ``optimizer`` (default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.
    """

    family = "density_network"
    groups = ("samples",)
    #: the flat keys of checkpoints written before the group, and where they live now
    flat_keys = {"num_samples": ("samples", "train"), "val_samples": ("samples", "val"),
                 "test_samples": ("samples", "test"), "chunk_size": ("samples", "chunk")}
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
        samples: PriorSamples = PriorSamples(),
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.save_hyperparameters(ignore=["likelihood", "optimizer", "lr_scheduler"])
        self.samples = PriorSamples.coerce(samples)
        self.latent_dim = latent_dim
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()
        self.decoder = MLP([latent_dim, *hidden, self.likelihood.num_params(self.data_dim)], activation, init)

    def log_weights(self, x: Tensor, n: int) -> Tensor:
        r"""``log p(x | z_s)`` for ``n`` prior samples shared by the batch: ``(n, B)`` (decoded in chunks)."""
        flat = x.flatten(1)
        out = []
        for start in range(0, n, self.samples.chunk):
            z = torch.randn(min(self.samples.chunk, n - start), self.latent_dim, device=flat.device, dtype=flat.dtype)
            params = self.decoder(z)  # (c, P)
            out.append(self.likelihood.log_prob(flat[None], params[:, None].expand(-1, flat.shape[0], -1)))
        return torch.cat(out)

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        n = self.samples.train if stage == "train" else self.samples.val
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
        return f"prior-{self.samples.test}"

    def log_prob(self, x: Tensor) -> Tensor:
        return importance_weighted_log_prob(self.log_weights, x, self.samples.test, self.samples.chunk).log_prob.to(x.dtype)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        z = torch.randn(n, self.latent_dim, device=self.device)
        return self.likelihood.mean(self.decoder(z)).view(n, *self.data_shape)


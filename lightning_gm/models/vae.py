r"""The variational autoencoder (Kingma & Welling 2014), trained on the reparameterised ELBO.

.. math::

    \mathcal L(x) = \mathbb E_{q(z|x)}[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z)) \le \log p(x)

with a diagonal Gaussian encoder :math:`q(z|x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))`,
prior :math:`p(z) = \mathcal N(0, I)` (so the KL is analytic) and a decoder likelihood injected from
the config. The test log-likelihood is the ``k``-sample importance-weighted bound (Burda et al.
2016), ``k = 5000`` by default.

References: Kingma & Welling (2014), Auto-Encoding Variational Bayes; Burda, Grosse & Salakhutdinov
(2016), Importance Weighted Autoencoders (the default 784-200-200-50 architecture).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_gm.estimators.importance import importance_weighted_log_prob
from lightning_gm.models.base import GenerativeModel, _adam
from lightning_gm.nn.distributions import kl_normal_std_normal, log_normal_diag, log_standard_normal, reparameterize
from lightning_gm.nn.likelihoods import BernoulliLikelihood, Likelihood
from lightning_gm.nn.mlp import MLP

__all__ = ["VAE", "kl_warmup_weight"]


def kl_warmup_weight(beta: float, warmup_epochs: int, step: int, steps_per_epoch: int | float) -> float:
    """Linear KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): ``beta * min(1, step / (warmup_epochs *
    steps_per_epoch))``."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, step / (warmup_epochs * max(1, steps_per_epoch)))


class VAE(GenerativeModel):
    """Gaussian-encoder VAE with an MLP encoder and decoder.

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: dimension of ``z``.
        hidden: hidden layer widths of the encoder; the decoder mirrors them.
        activation: hidden activation (``tanh`` as in Burda et al.).
        likelihood: decoder observation model (default Bernoulli, for binary data).
        beta: weight of the KL term (1 = the ELBO).
        kl_warmup_epochs: anneal the KL weight linearly from 0 to ``beta`` over this many epochs.
        val_k: importance samples for ``val/nll`` each validation (0 = skip).
        test_k: importance samples for ``test/nll``.
        chunk_size: importance samples drawn at once (bounds memory for large ``k``).
        optimizer: optimiser factory (default Adam, lr 1e-3).
        lr_scheduler: optional scheduler factory.
    """

    family = "vae"
    monitor = "val/elbo"
    monitor_mode = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: Optional[Likelihood] = None,
        beta: float = 1.0,
        kl_warmup_epochs: int = 0,
        val_k: int = 0,
        test_k: int = 5000,
        chunk_size: int = 500,
        optimizer: OptimizerCallable = _adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(data_shape, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["likelihood", "optimizer", "lr_scheduler"])
        self.latent_dim = latent_dim
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()
        self.encoder = MLP([self.data_dim, *hidden, 2 * latent_dim], activation)
        self.decoder = MLP([latent_dim, *reversed(list(hidden)), self.likelihood.num_params(self.data_dim)], activation)
        self.beta, self.kl_warmup_epochs = beta, kl_warmup_epochs
        self.val_k, self.test_k, self.chunk_size = val_k, test_k, chunk_size

    # --- the model ----------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z|x)`` parameters ``(mu, log_var)``, each ``(B, latent_dim)``."""
        return self.encoder(x.flatten(1)).chunk(2, dim=-1)

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters of ``p(x|z)``, shape ``(..., num_params)``."""
        return self.decoder(z)

    def kl_weight(self) -> float:
        """KL weight of the current training step (``beta`` outside training)."""
        if not self.training or self.kl_warmup_epochs <= 0:
            return self.beta
        return kl_warmup_weight(self.beta, self.kl_warmup_epochs, self.global_step, self.trainer.num_training_batches)

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        flat = x.flatten(1)
        mu, log_var = self.encode(flat)
        z = reparameterize(mu, log_var)
        rec = self.likelihood.log_prob(flat, self.decode(z))
        kl = kl_normal_std_normal(mu, log_var)
        elbo = rec - kl
        weight = self.kl_weight()
        terms = {
            "loss": -(rec - weight * kl).mean(),
            "elbo": elbo.mean(),
            "reconstruction": rec.mean(),
            "kl": kl.mean(),
        }
        if stage == "train" and self.kl_warmup_epochs > 0:
            terms["kl_weight"] = torch.tensor(weight)
        if stage == "val" and self.val_k > 0:
            terms["nll"] = -self.iw_log_prob(x, self.val_k).mean()
        return terms

    def log_weights(self, x: Tensor, n: int) -> Tensor:
        """``log p(x, z) - log q(z|x)`` for ``n`` samples per example: ``(n, B)``."""
        flat = x.flatten(1)
        mu, log_var = self.encode(flat)
        z = reparameterize(mu, log_var, n)  # (n, B, latent)
        return (
            self.likelihood.log_prob(flat, self.decode(z)) + log_standard_normal(z) - log_normal_diag(z, mu, log_var)
        )

    def iw_log_prob(self, x: Tensor, k: int) -> Tensor:
        """The ``k``-sample importance-weighted bound of ``log p(x)``, ``(B,)``."""
        return importance_weighted_log_prob(self.log_weights, x, k, self.chunk_size).log_prob.to(x.dtype)

    # --- the shared interface -----------------------------------------------------------------------
    @property
    def estimator(self) -> str:
        return f"iwae-{self.test_k}"

    def log_prob(self, x: Tensor) -> Tensor:
        return self.iw_log_prob(x, self.test_k)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        z = torch.randn(n, self.latent_dim, device=self.device)
        return self.likelihood.mean(self.decode(z)).view(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean: ``(B, *data_shape)``."""
        mu, _ = self.encode(x.flatten(1))
        return self.likelihood.mean(self.decode(mu)).view(x.shape)

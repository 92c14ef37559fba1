r"""Deterministic and denoising autoencoders (MLP or convolutional): no likelihood, reconstruction error.

An autoencoder :math:`\hat x = g(f(\tilde x))` is trained to minimise a reconstruction loss, the
negative log of an injected observation model (cross-entropy for Bernoulli, squared error for a
fixed-variance Gaussian):

.. math::

    \mathcal L = -\frac1B \sum_b \log p\big(x_b \mid g(f(\tilde x_b))\big), \qquad
    \tilde x = x \ \text{(AE)} \quad\text{or}\quad \tilde x \sim c(\tilde x \mid x) \ \text{(DAE)} ,

with the corruption :math:`c` masking noise (each pixel zeroed with probability ``noise_level``),
additive Gaussian noise (standard deviation ``noise_level``) or salt-and-pepper noise (each pixel
set to 0 or 1 with probability ``noise_level``). It defines no density: :meth:`Autoencoder.log_prob`
raises :class:`NoLikelihoodError`, the estimator is ``"none (reconstruction error)"`` and the test
logs ``test/reconstruction_error`` (:math:`\|x - \hat x\|^2` per example, from the clean input)
instead of ``test/nll``. The PCA reconstruction of the same dimension (the best *linear*
:math:`L`-dimensional autoencoder, fitted in closed form at the start of fitting) is logged beside it
as ``{stage}/pca_reconstruction_error``, and ``samples/reconstructions_vs_pca.png`` shows originals,
(corrupted inputs,) autoencoder and PCA reconstructions after testing. ``sample`` decodes codes drawn
from a Gaussian fitted (running averages) to the training codes: an AE is not a generative model, and
the pictures show it.

References: Rumelhart, Hinton & Williams (1986); Hinton & Salakhutdinov (2006), Reducing the
dimensionality of data with neural networks; Vincent, Larochelle, Bengio & Manzagol (2008),
Extracting and composing robust features with denoising autoencoders; Baldi & Hornik (1989)
(a linear autoencoder spans the principal subspace).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_gm.errors import LightningGMError
from lightning_gm.images import as_images, make_grid, save_png
from lightning_gm.models.base import GenerativeModel
from lightning_gm.nn import linear_gaussian as lg
from lightning_gm.nn.conv import ConvDecoder, ConvEncoder
from lightning_gm.nn.likelihoods import BernoulliLikelihood, Likelihood
from lightning_gm.nn.mlp import MLP

__all__ = ["Autoencoder", "NoLikelihoodError", "corrupt"]

Corruption = Literal["none", "masking", "gaussian", "salt_and_pepper"]


class NoLikelihoodError(LightningGMError, NotImplementedError):
    """Asked for ``log p(x)`` of a model that does not define a density (an autoencoder)."""


def corrupt(x: Tensor, kind: Corruption, level: float) -> Tensor:
    """The denoising autoencoder's corruption :math:`\\tilde x \\sim c(\\cdot \\mid x)` of a batch ``x``."""
    if kind == "none" or level == 0:
        return x
    if kind == "masking":
        return x * (torch.rand_like(x) >= level).to(x.dtype)
    if kind == "gaussian":
        return x + level * torch.randn_like(x)
    if kind == "salt_and_pepper":
        hit = torch.rand_like(x) < level
        return torch.where(hit, (torch.rand_like(x) < 0.5).to(x.dtype), x)
    raise ValueError(f"corruption must be one of none, masking, gaussian, salt_and_pepper; got {kind!r}")


class Autoencoder(GenerativeModel):
    """A deterministic (``corruption="none"``) or denoising autoencoder.

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: code size :math:`L` (and the number of principal components of the PCA baseline).
        architecture: ``mlp`` (widths ``hidden``) or ``conv`` (stride-2 convolutions with ``channels``;
            images, or flattened square images).
        hidden: hidden widths of the MLP encoder; the decoder mirrors them.
        channels: channels of the conv encoder's stride-2 convolutions; the decoder mirrors them
            (:mod:`lightning_gm.nn.conv`, whose linear layer has width ``hidden[0]``).
        activation: hidden activation.
        likelihood: observation model whose negative log is the training loss (default Bernoulli:
            cross-entropy; ``GaussianLikelihood(learn_variance=false)``: squared error).
        corruption: ``none`` (AE), ``masking``, ``gaussian`` or ``salt_and_pepper`` (DAE).
        noise_level: masking / salt-and-pepper probability, or Gaussian standard deviation.
        pca_baseline: fit PCA with ``latent_dim`` components at the start of fitting and log its
            reconstruction error alongside.
        code_momentum: momentum of the running code mean/variance used by ``sample``.
        **kwargs: ``optimizer`` (default Adam, lr 1e-3) and ``lr_scheduler`` of
            :class:`~lightning_gm.models.base.GenerativeModel`.
    """

    family = "autoencoder"
    monitor = "val/reconstruction_error"
    monitor_mode = "min"

    pca_components: Tensor
    pca_mean: Tensor
    pca_fitted: Tensor
    code_mean: Tensor
    code_var: Tensor

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_dim: int = 32,
        architecture: Literal["mlp", "conv"] = "mlp",
        hidden: Sequence[int] = (500, 250),
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
        likelihood: Optional[Likelihood] = None,
        corruption: Corruption = "none",
        noise_level: float = 0.0,
        pca_baseline: bool = True,
        code_momentum: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_shape=data_shape, **kwargs)
        self.save_hyperparameters(ignore=["likelihood", "optimizer", "lr_scheduler"])
        if corruption not in ("none", "masking", "gaussian", "salt_and_pepper"):
            raise ValueError(f"model.init_args.corruption must be none, masking, gaussian or salt_and_pepper; got {corruption!r}")
        if corruption != "none" and noise_level <= 0:
            raise ValueError(f"model.init_args.noise_level must be > 0 with corruption={corruption!r}, got {noise_level}")
        self.latent_dim = latent_dim
        self.likelihood = likelihood if likelihood is not None else BernoulliLikelihood()
        n_params = self.likelihood.num_params(self.data_dim)
        if architecture == "mlp":
            self.encoder: torch.nn.Module = MLP([self.data_dim, *hidden, latent_dim], activation)
            self.decoder: torch.nn.Module = MLP([latent_dim, *reversed(list(hidden)), n_params], activation)
        elif architecture == "conv":
            image = as_images(torch.zeros(1, self.data_dim), self.data_shape)
            if image is None:
                raise ValueError(f"model.init_args.architecture=conv needs image data, got data_shape {self.data_shape}")
            shape = tuple(image.shape[1:])
            width = hidden[0] if len(hidden) else 256
            self.encoder = ConvEncoder(self.data_dim, latent_dim, shape, channels, width, activation)
            self.decoder = ConvDecoder(latent_dim, n_params, shape, list(reversed(list(channels))), width, activation)
        else:
            raise ValueError(f"model.init_args.architecture must be mlp or conv, got {architecture!r}")
        self.architecture = architecture
        self.corruption, self.noise_level = corruption, noise_level
        self.pca_baseline, self.code_momentum = pca_baseline, code_momentum
        self.register_buffer("pca_components", torch.zeros(self.data_dim, latent_dim))
        self.register_buffer("pca_mean", torch.zeros(self.data_dim))
        self.register_buffer("pca_fitted", torch.tensor(False))
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_var", torch.ones(latent_dim))
        self._picture_batch: Optional[Tensor] = None

    # --- the network ------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Codes ``(B, L)`` of a batch ``(B, *data_shape)``."""
        return self.encoder(x.flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters ``(B, num_params)`` of codes ``(B, L)``."""
        return self.decoder(z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean reconstruction of the clean input: shape of ``x``."""
        return self.likelihood.mean(self.decode(self.encode(x))).view(x.shape)

    @torch.no_grad()
    def pca_reconstruct(self, x: Tensor) -> Tensor:
        r"""Projection on the principal subspace, :math:`U U^\top (x - \bar x) + \bar x`: shape of ``x``."""
        flat = x.flatten(1) - self.pca_mean
        return (flat @ self.pca_components @ self.pca_components.T + self.pca_mean).view(x.shape)

    def on_fit_start(self) -> None:
        if not self.pca_baseline or bool(self.pca_fitted):
            return
        dm = getattr(self.trainer, "datamodule", None)
        loader = dm.train_dataloader() if dm is not None else self.trainer.fit_loop._data_source.dataloader()
        self.fit_pca(loader)
        for name in ("pca_components", "pca_mean"):
            getattr(self, name).copy_(self.trainer.strategy.broadcast(getattr(self, name), src=0))

    @torch.no_grad()
    def fit_pca(self, batches: Any) -> None:
        """Fit the PCA baseline (``latent_dim`` components) to an iterable of batches."""
        moments = lg.StreamingMoments.of(b.to(self.device) if isinstance(b, Tensor) else b[0].to(self.device)
                                         for b in batches)
        _, U = lg.pca(moments.cov, self.latent_dim)
        self.pca_components.copy_(U.to(self.pca_components))
        self.pca_mean.copy_(moments.mean.to(self.pca_mean))
        self.pca_fitted.fill_(True)

    # --- the objective ------------------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        flat = x.flatten(1)
        z = self.encode(corrupt(x, self.corruption, self.noise_level) if stage == "train" else x)
        params = self.decode(z)
        nll = -self.likelihood.log_prob(flat, params)
        if stage == "train":
            with torch.no_grad():  # running Gaussian fit to the codes, for `sample`
                m = self.code_momentum
                self.code_mean.lerp_(z.mean(0), m)
                self.code_var.lerp_(z.var(0, unbiased=False) if len(z) > 1 else self.code_var, m)
        rec = self.likelihood.mean(params)
        terms = {"loss": nll.mean(), "reconstruction_error": ((flat - rec) ** 2).sum(-1).mean().detach()}
        if stage != "train":
            if self.corruption != "none":
                with torch.no_grad():
                    noisy = self.reconstruct(corrupt(x, self.corruption, self.noise_level)).flatten(1)
                terms["denoising_error"] = ((flat - noisy) ** 2).sum(-1).mean()
            if bool(self.pca_fitted):
                terms["pca_reconstruction_error"] = ((flat - self.pca_reconstruct(x).flatten(1)) ** 2).sum(-1).mean()
        return terms

    # --- no likelihood: the test reports reconstruction errors -----------------------------------------------
    @property
    def estimator(self) -> str:
        return "none (reconstruction error)"

    def log_prob(self, x: Tensor) -> Tensor:
        raise NoLikelihoodError(
            f"{type(self).__name__} is an autoencoder: it defines no density p(x), so it has no log-likelihood "
            "(test/nll, predict). Its test metric is test/reconstruction_error; for a likelihood use a VAE, PPCA or a flow."
        )

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if batch_idx == 0:
            self._picture_batch = x[:16].detach()
        self._common_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        x, self._picture_batch = self._picture_batch, None
        if x is not None and self.trainer.is_global_zero and self.trainer.default_root_dir:
            path = self.comparison_picture(x, Path(self.trainer.default_root_dir) / "samples" / "reconstructions_vs_pca.png")
            for logger in self.trainer.loggers:
                if path is not None and isinstance(logger, WandbLogger):
                    logger.log_image(key="reconstructions_vs_pca", images=[str(path)], step=self.trainer.global_step)

    @torch.no_grad()
    def comparison_picture(self, x: Tensor, path: str | Path) -> Optional[Path]:
        """Rows: originals, (corrupted inputs and their denoised reconstructions,) AE reconstructions,
        PCA reconstructions; ``None`` for data that are not images."""
        rows = [x]
        if self.corruption != "none":
            noisy = corrupt(x, self.corruption, self.noise_level)
            rows += [noisy, self.reconstruct(noisy)]
        rows.append(self.reconstruct(x))
        if bool(self.pca_fitted):
            rows.append(self.pca_reconstruct(x))
        images = [as_images(r.float().cpu(), self.data_shape) for r in rows]
        if any(i is None for i in images):
            return None
        return save_png(make_grid(torch.cat(images), nrow=len(x)), path)  # type: ignore[arg-type]

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        z = self.code_mean + self.code_var.sqrt() * torch.randn(n, self.latent_dim, device=self.device)
        return self.likelihood.mean(self.decode(z)).view(n, *self.data_shape)

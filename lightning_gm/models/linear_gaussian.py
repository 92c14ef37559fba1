r"""Probabilistic PCA and factor analysis: linear-Gaussian latent models fitted by maximum likelihood.

.. math::

    z \sim \mathcal N(0, I_L), \quad x \mid z \sim \mathcal N(W z + \mu, \Psi), \qquad
    \log p(x) = \log \mathcal N(x; \mu, W W^\top + \Psi) \quad \text{(exact)},

:math:`\Psi = \sigma^2 I` (PPCA, closed-form ML solution) or diagonal (factor analysis, EM). Both
depend on the training data only through its mean and covariance, so ``fit`` computes them in one
streaming pass over the training loader at the start of fitting (``on_fit_start``), solves for the
parameters (eigendecomposition, or EM iterations logged as ``fit/em_log_likelihood``) and stores
them as buffers, so checkpoints hold the solution. The training "epoch" then only evaluates the
exact train NLL; there is no optimiser. Test NLL is exact (estimator ``exact``); on dequantised
images the base class turns it into bits/dim comparable with flows.

Pictures: samples and reconstructions through :class:`~lightning_gm.callbacks.SamplePictures`, and
at the end of fitting ``samples/principal_subspace.png`` (the mean, then the columns of :math:`W`).
The exact maths lives in :mod:`lightning_gm.nn.linear_gaussian`; :meth:`LinearGaussianModel.log_marginal`
is a plain-torch oracle for tests of estimators.

References: Tipping & Bishop (1999), Probabilistic Principal Component Analysis; Rubin & Thayer
(1982), EM algorithms for ML factor analysis; Bishop (2006), PRML chapter 12.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_gm.images import as_images, make_grid, save_png
from lightning_gm.models.base import GenerativeModel
from lightning_gm.nn import linear_gaussian as lg

__all__ = ["LinearGaussianModel", "PPCA", "FactorAnalysis"]


class LinearGaussianModel(GenerativeModel):
    """Shared part of :class:`PPCA` and :class:`FactorAnalysis`: buffers, exact ``log_prob``, samples,
    the streaming fit at ``on_fit_start`` and the principal-subspace picture.

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: :math:`L`, number of latent dimensions (principal components / factors).
        min_variance: floor on the noise variances (constant pixels otherwise give a zero variance).
    """

    family = "linear_gaussian"
    monitor = "val/nll"
    monitor_mode = "min"

    W: Tensor
    mu: Tensor
    psi: Tensor
    fitted: Tensor

    def __init__(self, data_shape: Sequence[int] = (784,), latent_dim: int = 50, min_variance: float = 1e-6) -> None:
        super().__init__(data_shape)
        if not 0 < latent_dim < self.data_dim:
            raise ValueError(f"model.init_args.latent_dim must be in [1, {self.data_dim - 1}], got {latent_dim}")
        self.latent_dim = latent_dim
        self.min_variance = min_variance
        self.automatic_optimization = False  # fitted in closed form / by EM, not by an optimiser
        d = torch.float64
        self.register_buffer("W", torch.zeros(self.data_dim, latent_dim, dtype=d))
        self.register_buffer("mu", torch.zeros(self.data_dim, dtype=d))
        self.register_buffer("psi", torch.ones(self.data_dim, dtype=d))
        self.register_buffer("fitted", torch.tensor(False))

    # --- fitting ------------------------------------------------------------------------------------
    def solve(self, moments: lg.Moments) -> list[float]:
        """Set ``W, mu, psi`` from the training data's :class:`~lightning_gm.nn.linear_gaussian.Moments`;
        returns the average train log-likelihood after each iteration (one entry for a closed form)."""
        raise NotImplementedError

    @torch.no_grad()
    def fit_data(self, batches: Iterable[Any]) -> list[float]:
        """Fit by maximum likelihood to an iterable of batches (``x`` or ``(x, y)``); returns the
        log-likelihood trajectory (nats per example)."""
        acc = lg.StreamingMoments()
        for b in batches:
            x = b[0] if isinstance(b, (tuple, list)) else b
            acc.update(x.to(self.device))
        history = self.solve(acc.compute())
        self.fitted.fill_(True)
        return history

    def on_fit_start(self) -> None:
        if bool(self.fitted):
            return  # resumed from a checkpoint that holds the solution
        trainer = self.trainer
        dm = getattr(trainer, "datamodule", None)
        loader = dm.train_dataloader() if dm is not None else trainer.fit_loop._data_source.dataloader()
        history = self.fit_data(loader)
        # every rank saw the whole loader, but dequantisation noise differs: keep rank 0's solution
        for name in ("W", "mu", "psi"):
            getattr(self, name).copy_(trainer.strategy.broadcast(getattr(self, name), src=0))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # W&B steps must not run ahead of training's: summary only
                logger.experiment.summary.update({"fit/em_log_likelihood": history[-1], "fit/em_iterations": len(history) - 1})
                continue
            for i, ll in enumerate(history):  # the EM trajectory (one row for PPCA's closed form)
                logger.log_metrics({"fit/em_log_likelihood": ll}, step=i)
        self.fit_log_likelihood = history[-1]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        with torch.no_grad():
            loss = self._common_step(batch, "train")
        self.optimizers().step()  # a no-op: it only advances the global step, so checkpoints are written
        return loss

    def configure_optimizers(self) -> Any:
        # Nothing to optimise (the solution is closed form / EM). An optimiser over one empty tensor
        # with lr 0 keeps Lightning's step counter, and with it ModelCheckpoint, working.
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(0))], lr=0.0)

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and self.trainer.default_root_dir:
            path = self.principal_subspace_picture(Path(self.trainer.default_root_dir) / "samples" / "principal_subspace.png")
            if path is not None:
                for logger in self.trainer.loggers:
                    if isinstance(logger, WandbLogger):
                        logger.log_image(key="principal_subspace", images=[str(path)], step=self.trainer.global_step)

    def num_parameters(self) -> int:
        """Free parameters of the fitted model (held in buffers, not ``nn.Parameter``: no optimiser
        touches them): ``W``, ``mu`` and the noise variances."""
        return self.W.numel() + self.mu.numel() + self.num_noise_parameters

    num_noise_parameters: int = 0  # set by the subclass: 1 for PPCA, D for factor analysis

    # --- the model ------------------------------------------------------------------------------------
    def log_marginal(self, x: Tensor) -> Tensor:
        r"""Exact :math:`\log p(x)` in float64, ``(B, ...) -> (B,)`` (a plain-torch oracle for tests)."""
        return lg.log_marginal(x.reshape(x.shape[0], -1).to(self.W), self.W, self.mu, self.psi)

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        nll = -self.log_marginal(x).mean().float()
        return {"loss": nll, "nll": nll}

    def test_terms(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One evaluation of the exact marginal gives both the test loss and the per-example ``log p(x)``."""
        log_marginal = self.log_marginal(x)
        nll = -log_marginal.mean().float()
        return {"loss": nll, "nll": nll}, log_marginal.to(x.dtype)

    @property
    def estimator(self) -> str:
        return "exact"

    def log_prob(self, x: Tensor) -> Tensor:
        return self.log_marginal(x).to(x.dtype)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return lg.sample(n, self.W, self.mu, self.psi).float().view(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        r"""Projection through the latent space: :math:`W\,\mathbb E[z|x] + \mu`, shape of ``x``."""
        flat = x.reshape(x.shape[0], -1).to(self.W)
        mean, _ = lg.posterior(flat, self.W, self.mu, self.psi)
        return (mean @ self.W.T + self.mu).to(x.dtype).view(x.shape)

    @torch.no_grad()
    def principal_subspace_picture(self, path: str | Path, max_components: int = 63) -> Optional[Path]:
        """Save the mean and the first columns of ``W`` (each rescaled to [0, 1]) as one PNG; ``None``
        for data that are not images."""
        cols = self.W[:, :max_components].T
        tiles = torch.cat([self.mu[None], cols]).float().cpu()
        lo, hi = tiles.min(1, keepdim=True).values, tiles.max(1, keepdim=True).values
        images = as_images((tiles - lo) / (hi - lo).clamp(min=1e-12), self.data_shape)
        return None if images is None else save_png(make_grid(images), path)


class PPCA(LinearGaussianModel):
    r"""Probabilistic PCA, :math:`\Psi = \sigma^2 I`, with the closed-form ML solution of Tipping &
    Bishop (1999) (see :func:`lightning_gm.nn.linear_gaussian.ppca_ml`).

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: number of principal components :math:`L`.
        min_variance: floor on :math:`\sigma^2`.
    """

    family = "ppca"

    def __init__(self, data_shape: Sequence[int] = (784,), latent_dim: int = 50, min_variance: float = 1e-6) -> None:
        super().__init__(data_shape, latent_dim, min_variance)
        self.save_hyperparameters()
        self.num_noise_parameters = 1

    def solve(self, moments: lg.Moments) -> list[float]:
        W, mu, sigma2 = lg.ppca_ml(moments, self.latent_dim, self.min_variance)
        self.W.copy_(W), self.mu.copy_(mu), self.psi.fill_(float(sigma2))
        return [float(lg.average_log_likelihood(moments, self.W, self.mu, self.psi))]

    @property
    def sigma2(self) -> Tensor:
        """The isotropic noise variance."""
        return self.psi[0]


class FactorAnalysis(LinearGaussianModel):
    r"""Factor analysis, :math:`\Psi = \operatorname{diag}\psi`, fitted by EM on the sample covariance
    (see :func:`lightning_gm.nn.linear_gaussian.fa_em_step`), started from the PPCA solution.

    Args:
        data_shape: shape of one example (linked from the data).
        latent_dim: number of factors :math:`L`.
        em_iterations: maximum number of EM iterations.
        tol: stop when an iteration gains less than this (nats per example).
        min_variance: floor on each :math:`\psi_i`.
    """

    family = "factor_analysis"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_dim: int = 50,
        em_iterations: int = 200,
        tol: float = 1e-4,
        min_variance: float = 1e-6,
    ) -> None:
        super().__init__(data_shape, latent_dim, min_variance)
        self.save_hyperparameters()
        if em_iterations < 1:
            raise ValueError(f"model.init_args.em_iterations must be >= 1, got {em_iterations}")
        self.em_iterations, self.tol = em_iterations, tol
        self.num_noise_parameters = self.data_dim

    def solve(self, moments: lg.Moments) -> list[float]:
        W, psi = lg.fa_init(moments, self.latent_dim, self.min_variance)
        mu = moments.mean
        history = [float(lg.average_log_likelihood(moments, W, mu, psi))]
        for _ in range(self.em_iterations):
            W, psi = lg.fa_em_step(moments.cov, W, psi, self.min_variance)
            history.append(float(lg.average_log_likelihood(moments, W, mu, psi)))
            if history[-1] - history[-2] < self.tol:
                break
        self.W.copy_(W), self.mu.copy_(mu), self.psi.copy_(psi)
        return history

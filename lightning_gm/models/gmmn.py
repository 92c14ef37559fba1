r"""Generative moment-matching networks (Li, Swersky & Zemel 2015; Dziugaite, Roy & Ghahramani 2015).

A generator :math:`G(z)`, :math:`z \sim \mathcal N(0, I)`, trained to make its samples indistinguishable from a
data batch :math:`x_{1..m}` by the squared maximum mean discrepancy with a mixture of Gaussian kernels
(:mod:`lightning_gm.estimators.mmd`), estimated on the batch and ``num_samples`` fresh samples :math:`y_j = G(z_j)`:

.. math::

    \mathcal L = \widehat{\mathrm{MMD}}^2(x, y), \qquad
    k(x, y) = \sum_s \exp\!\big(-\lVert x - y\rVert^2 / (2 \sigma_s^2)\big),

either the biased V-statistic (the default, as in Li et al.; never negative) or the unbiased U-statistic (as
in Dziugaite et al.), and optionally its square root ``objective: mmd`` (Li et al.'s released code trains on
:math:`\sqrt{\widehat{\mathrm{MMD}}^2}`, whose gradient does not vanish as the samples improve).

Logged: ``{stage}/mmd2_train`` (the training estimator), ``val/mmd2`` (biased, Li et al.'s bandwidths: the
metric comparable with the GAN's, which picks the best checkpoint). Test: decoder-AIS ``test/nll``
(see :mod:`lightning_gm.models.implicit`).

References: Li, Swersky & Zemel (2015), Generative Moment Matching Networks; Dziugaite, Roy & Ghahramani (2015),
Training generative neural networks via Maximum Mean Discrepancy optimization; Gretton et al. (2012), A Kernel
Two-Sample Test.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.mmd import DEFAULT_BANDWIDTHS, mmd2
from lightning_gm.models.implicit import ImplicitGenerativeModel, NetFactory

__all__ = ["GMMN"]


class GMMN(ImplicitGenerativeModel):
    r"""A generator trained on the batch MMD with a mixture of Gaussian kernels.

    Args:
        latent_dim: size of :math:`z \sim \mathcal N(0, I)`.
        generator: factory ``(latent_dim, D) -> network`` (default MLPGenerator with ``hidden``).
        hidden: hidden widths of the default MLP generator (Li et al.: 64-256-256-1024, ReLU, sigmoid output).
        bandwidths: kernel bandwidths :math:`\sigma_s` (default Li et al.'s 2, 5, 10, 20, 40, 80 for MNIST in [0, 1]).
        unbiased: train on the unbiased U-statistic instead of the biased V-statistic (default ``False``: biased).
        objective: ``mmd2`` (the squared MMD) or ``mmd`` (its square root, default, as Li et al.'s code).
        num_samples: generator samples per training batch (default: as many as the data batch).
        **kwargs: the other arguments of :class:`~lightning_gm.models.implicit.ImplicitGenerativeModel`
            (``data_shape``, ``obs_sigma``, ``ais``, ``val_ais_examples``, ``optimizer``, ``lr_scheduler``), by keyword.
    """

    family = "gmmn"

    def __init__(
        self,
        latent_dim: int = 10,
        generator: Optional[NetFactory] = None,
        hidden: Sequence[int] = (64, 256, 256, 1024),
        bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
        unbiased: bool = False,
        objective: Literal["mmd2", "mmd"] = "mmd",
        num_samples: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if len(bandwidths) == 0 or any(float(s) <= 0 for s in bandwidths):
            raise ConfigError(f"model.init_args.bandwidths must be a non-empty list of positive numbers, got {list(bandwidths)}")
        if objective not in ("mmd2", "mmd"):
            raise ConfigError(f"model.init_args.objective must be 'mmd2' or 'mmd', got {objective!r}")
        if num_samples is not None and num_samples < 2:
            raise ConfigError(f"model.init_args.num_samples must be >= 2 (or null for the batch size), got {num_samples}")
        super().__init__(latent_dim=latent_dim, generator=generator, hidden=hidden, **kwargs)
        self.save_hyperparameters(ignore=["generator", "optimizer", "lr_scheduler"])
        self.bandwidths = tuple(float(s) for s in bandwidths)
        self.unbiased, self.objective, self.num_samples = bool(unbiased), objective, num_samples

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        flat = x.flatten(1)
        if self.unbiased and flat.shape[0] < 2:
            raise ConfigError("model.init_args.unbiased=true needs data batches of at least 2 examples")
        n = self.num_samples or flat.shape[0]
        fake = self.generate(self.prior_noise(n))
        m2 = mmd2(flat, fake, self.bandwidths, unbiased=self.unbiased)
        # sqrt at 0 has an infinite gradient: clamp (the biased estimate is >= 0, the unbiased one may be < 0)
        loss = m2 if self.objective == "mmd2" else m2.clamp_min(1e-12).sqrt()
        terms = {"loss": loss, "mmd2_train": m2}
        if stage != "train":
            terms["mmd2"] = self.sample_mmd2(flat)
        return terms

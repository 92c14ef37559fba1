r"""Restricted Boltzmann machines as LightningModules: :class:`RBM` (binary data) and :class:`GaussianRBM`
(real-valued data, Gaussian visibles of learned or fixed variance on standardised data).

What they share (contrastive divergence with Hinton's penalties, persistent chains, the test :math:`\log Z` through
:class:`~lightning_gm.models.energy.PartitionMixin`, the parameter groups ``cd``, ``penalties`` and ``ais``) is
:class:`~lightning_gm.models.rbm_base.RBMModelBase`, whose module docstring carries the maths. A family here
supplies the plain-torch RBM (:mod:`lightning_gm.nn.rbm`), its data-driven initialisation and its AIS path.

References:
    Hinton (2010), A practical guide to training restricted Boltzmann machines; Salakhutdinov & Murray (2008),
    On the quantitative analysis of deep belief networks (AIS); Cho, Ilin & Raiko (2011), Improved learning of
    Gaussian-Bernoulli RBMs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AnnealingPath, base_rate_log_odds
from lightning_gm.estimators.rbm_ais import GaussianRBMAnnealingPath
from lightning_gm.models.energy import StandardizedVisibles
from lightning_gm.models.rbm_base import RBMModelBase, cd_step, sparsity_penalty
from lightning_gm.nn.rbm import CD, BernoulliRBM, GaussianBernoulliRBM, RBMBase

__all__ = ["RBM", "GaussianRBM", "RBMModelBase", "cd_step", "sparsity_penalty"]


class RBM(RBMModelBase):
    r"""Bernoulli-Bernoulli RBM (model family ``rbm``) trained by CD-k or PCD.

    .. math::

        E(v, h) = -v^\top W h - b^\top v - c^\top h, \qquad
        \log p(v) = -F(v) - \log Z, \quad F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}).

    Monitors: ``train/recon_error`` and ``train/cd_gap`` (the value of the CD surrogate, penalties included:
    not a likelihood) on the steps that are logged (every ``trainer.log_every_n_steps``; their ``_epoch`` means
    average those steps), ``val/recon_error``, ``val/pll`` (stochastic pseudo-log-likelihood,
    nats/example, the checkpoint monitor), ``val/free_energy`` and ``val/free_energy_gap``; at test
    ``test/nll`` (estimator ``exact`` or ``ais``), ``test/logZ`` and its interval.

    Args:
        **kwargs: the arguments of :class:`RBMModelBase` (``data_shape``, ``n_hidden``, ``cd``, ``penalties``,
            ``ais``, ...), by keyword. At fit start the visible biases are set to the data's log-odds
            (``init_visible_bias``) and the AIS base-rate model is the data's log-odds.

    References:
        Hinton (2002); Tieleman (2008); Hinton (2010), A practical guide to training RBMs;
        Salakhutdinov & Murray (2008).
    """

    monitor = "val/pll"
    monitor_mode = "max"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _make_rbm(self, weight_std: float) -> RBMBase:
        return BernoulliRBM(self.data_dim, self.n_hidden, weight_std=weight_std)

    def _init_from_data(self, mean: Tensor, sq_mean: Tensor) -> None:
        assert isinstance(self.rbm, BernoulliRBM)
        if self.init_visible_bias:
            self.rbm.init_visible_bias_from_data(mean.unsqueeze(0))
        # the AIS base-rate model: the data's log-odds (Salakhutdinov & Murray 2008)
        self.ais_base.copy_(base_rate_log_odds(mean.unsqueeze(0)).to(self.ais_base))

    def _monitor_terms(self, v: Tensor) -> dict[str, Tensor]:
        assert isinstance(self.rbm, BernoulliRBM)
        return {"pll": self.rbm.pseudo_log_likelihood(v).mean()}


class GaussianRBM(StandardizedVisibles, RBMModelBase):
    r"""Gaussian-Bernoulli RBM (family ``rbm``) for real-valued data, trained by CD-k or PCD.

    .. math::

        E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_{ij} \frac{v_i}{\sigma_i^2} W_{ij} h_j - c^\top h

    (Cho et al. 2011). With ``standardize`` the model sees :math:`v = (x - \mu) / s` with the per-unit
    training mean :math:`\mu` and standard deviation :math:`s` (clamped below at ``min_std``), stored as
    buffers, and the change of variables gives the density of the data itself:

    .. math:: \log p(x) = -F(v) - \log Z - \sum_i \log s_i.

    Args:
        sigma: initial (or fixed) visible standard deviation in model space (1 for standardised data).
        learn_sigma: learn :math:`\log\sigma` too.
        standardize: standardise the data per unit inside the model (statistics from the training set at
            fit start).
        min_std: lower clamp of the data standard deviations (constant pixels).
        cd: as :class:`RBM`, CD-k from the data by default (``persistent: false``).
        **kwargs: the other arguments of :class:`RBMModelBase`, by keyword (Hinton: a learning rate one or two
            orders of magnitude smaller than for binary units). ``init_visible_bias`` sets :math:`b` to the
            (standardised) data mean at fit start; the AIS base is a Gaussian at that mean with the model's
            :math:`\sigma`.

    References:
        Cho, Ilin & Raiko (2011); Hinton (2010), section 13.2; Salakhutdinov & Murray (2008).
    """

    monitor = "val/recon_error"
    monitor_mode = "min"
    data_mean: Tensor
    data_std: Tensor

    def __init__(
        self,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        standardize: bool = True,
        min_std: float = 0.01,
        cd: CD = CD(persistent=False),
        **kwargs: Any,
    ) -> None:
        if sigma <= 0 or min_std <= 0:
            raise ConfigError(f"model.init_args.sigma and min_std must be > 0, got {sigma} and {min_std}")
        self.sigma0, self.learn_sigma, self.standardize, self.min_std = sigma, learn_sigma, standardize, min_std
        super().__init__(cd=cd, **kwargs)
        self.register_buffer("data_mean", torch.zeros(self.data_dim))
        self.register_buffer("data_std", torch.ones(self.data_dim))

    def _make_rbm(self, weight_std: float) -> RBMBase:
        return GaussianBernoulliRBM(self.data_dim, self.n_hidden, sigma=self.sigma0, learn_sigma=self.learn_sigma,
                                    weight_std=weight_std)

    def annealing_path(self) -> AnnealingPath:
        """From a Gaussian at ``ais_base`` (the standardised data mean) with the model's sigma to the RBM."""
        return GaussianRBMAnnealingPath(self.rbm, self.ais_base)  # type: ignore[arg-type]

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        # change of variables x -> (x - mu) / s: log|dv/dx| = -sum_i log s_i
        log_det = -self.data_std.log().sum() if self.standardize else 0.0
        return -self.free_energy(x) + log_det

    def _init_from_data(self, mean: Tensor, sq_mean: Tensor) -> None:
        if self.standardize:
            std = (sq_mean - mean.pow(2)).clamp_min(0).sqrt().clamp_min(self.min_std)
            self.data_mean.copy_(mean.to(self.data_mean))
            self.data_std.copy_(std.to(self.data_std))
            model_mean = torch.zeros_like(self.data_mean)
        else:
            model_mean = mean.to(self.data_mean)
        if self.init_visible_bias:
            with torch.no_grad():
                self.rbm.b.copy_(model_mean)
        self.ais_base.copy_(model_mean)

r"""The spike-and-slab RBM (Courville, Bergstra & Bengio 2011) as a LightningModule, on the RBM machinery.

:class:`SpikeSlabRBM` reuses :class:`~lightning_gm.models.rbm.RBMModelBase` (CD-k/PCD, chains in checkpoints,
weight cost on ``W``, sparsity on the spikes, momentum warm-up, fit-start statistics, test :math:`\log Z`) with
the maths of :class:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet` (a µ-ssRBM with diagonal :math:`\Lambda` and
:math:`\Phi_i`). With ``standardize`` the model sees :math:`v = (x - m)/\varsigma` (per-pixel training mean
and standard deviation) and the density of the data is

.. math:: \log p(x) = -F(v) - \log Z - \sum_d \log\varsigma_d \quad\text{(nats per example of the continuous density)}.

References:
    Courville, Bergstra & Bengio (2011), A spike and slab restricted Boltzmann machine, AISTATS;
    Courville, Bergstra & Bengio (2011), Unsupervised models of images by spike-and-slab RBMs, ICML;
    Tieleman (2008); Salakhutdinov & Murray (2008).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule, AnnealingPath
from lightning_gm.estimators.rbm_variants import SpikeSlabAnnealingPath, ssrbm_log_partition_enumerate
from lightning_gm.models.energy import StandardizedVisibles, scale_rows, sgd_real_rbm
from lightning_gm.models.rbm_base import RBMModelBase
from lightning_gm.nn.ssrbm import SpikeSlabRBMNet

__all__ = ["SpikeSlabRBM"]


class SpikeSlabRBM(StandardizedVisibles, RBMModelBase):
    r"""Spike-and-slab RBM (family ``rbm``) for real-valued data, trained by CD-k or PCD.

    .. math::

        E(v, s, h) = \tfrac12 v^\top\Big(\Lambda + \sum_i h_i \Phi_i\Big) v - \sum_i h_i s_i\, v^\top W_i
            + \tfrac12 \sum_i \alpha_i (s_i - \mu_i h_i)^2 - b^\top h

    Gibbs: :math:`h \mid v` (slab integrated out), :math:`s \mid v, h`, :math:`v \mid s, h` (diagonal Gaussian);
    free energy in closed form (:class:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet`).

    **Normalisability.** The model is a proper density iff, for every spike configuration :math:`h`,
    :math:`P_h = \Lambda + \sum_i h_i(\Phi_i - \alpha_i^{-1}W_iW_i^\top) \succ 0`. The parameterisation
    enforces the sufficient condition :math:`\Lambda \succeq \lambda_{\min} I` and
    :math:`\Phi_i \succeq \alpha_i^{-1}W_iW_i^\top` for all parameter values:
    :math:`\lambda = \lambda_{\min} + \operatorname{softplus}(\tilde\lambda)`,
    :math:`\alpha = \lambda_{\min} + \operatorname{softplus}(\tilde\alpha)`,
    :math:`\phi_{id} = |W_{di}|\lVert W_i\rVert_1/\alpha_i + \operatorname{softplus}(\tilde\phi_{id})` (Cauchy-Schwarz),
    so :math:`P_h \succeq \lambda_{\min} I` and training can never leave the domain. Initial or fixed values
    outside it (a precision not above ``min_precision``, ``phi <= 0``, ``min_precision <= 0``) raise
    :class:`~lightning_gm.errors.ConfigError` naming the key.

    Monitors: ``val/recon_error``, ``val/free_energy``, ``val/free_energy_gap``; the checkpoint monitor is
    ``val/progress`` (epochs done), so the test runs on the last checkpoint.

    Test :math:`\log Z`: exact when ``n_hidden <= ais.exact_max_units`` and ``D <= exact_max_visible`` (all
    :math:`2^N` spike configurations, slabs and visibles integrated analytically), else AIS from a Gaussian
    base at the data's mean and precision in model space
    (:class:`~lightning_gm.estimators.rbm_variants.SpikeSlabAnnealingPath`).

    Args:
        n_hidden: spike units ``N`` (one slab each).
        visible_precision: initial :math:`\lambda` (> ``min_precision``).
        slab_precision: initial :math:`\alpha` (> ``min_precision``).
        phi: initial extra precision :math:`\operatorname{softplus}(\tilde\phi_{id})` (> 0).
        slab_mean: initial :math:`\mu`.
        spike_bias: initial :math:`b` (negative: sparse spikes).
        min_precision: margin :math:`\lambda_{\min}` of :math:`\lambda` and :math:`\alpha` (> 0).
        learn_visible_precision: learn :math:`\lambda` (else fixed at its initial value).
        learn_phi: learn :math:`\tilde\phi` (else fixed).
        standardize: standardise the data per pixel inside the model (training statistics at fit start).
        min_std: lower clamp of the per-pixel standard deviations (> 0).
        exact_max_visible: largest ``D`` for the exact :math:`\log Z` (costs :math:`2^N` Cholesky factorisations of ``D x D``).
        ais: as :class:`~lightning_gm.models.RBM`, exact up to 12 spike units by default.
        optimizer: default SGD, lr 1e-3, momentum 0.9.
        **kwargs: the other arguments of :class:`~lightning_gm.models.rbm.RBMModelBase` (``cd``, ``penalties``, ...),
            by keyword. ``init_visible_bias`` is unused (this model has no visible bias: the data are centred by
            ``standardize``).

    References:
        Courville, Bergstra & Bengio (2011), AISTATS and ICML; Tieleman (2008); Salakhutdinov & Murray (2008).
    """

    #: ``val/progress`` = epochs done (only increases): the best checkpoint is the last one. The mean-field
    #: reconstruction error is no guide here (it rose while the AIS likelihood improved, see bench/RESULTS.md)
    #: and the ssRBM has no cheap likelihood proxy such as the binary RBM's pseudo-likelihood.
    monitor = "val/progress"
    monitor_mode = "max"
    data_mean: Tensor
    data_std: Tensor
    ais_precision: Tensor

    def __init__(
        self,
        n_hidden: int = 256,
        visible_precision: float = 1.0,
        slab_precision: float = 1.0,
        phi: float = 0.01,
        slab_mean: float = 0.0,
        spike_bias: float = -2.0,
        min_precision: float = 1e-3,
        learn_visible_precision: bool = True,
        learn_phi: bool = True,
        standardize: bool = True,
        min_std: float = 0.01,
        exact_max_visible: int = 100,
        ais: AISSchedule = AISSchedule(exact_max_units=12),
        optimizer: OptimizerCallable = sgd_real_rbm,
        **kwargs: Any,
    ) -> None:
        if not min_precision > 0:
            raise ConfigError(f"model.init_args.min_precision: must be > 0 (the precision margin), got {min_precision!r}")
        for key, value in (("visible_precision", visible_precision), ("slab_precision", slab_precision)):
            if not value > min_precision:
                raise ConfigError(
                    f"model.init_args.{key}: must be a precision > min_precision={min_precision} for the ssRBM to be "
                    f"normalisable, got {value!r}"
                )
        if not phi > 0:
            raise ConfigError(f"model.init_args.phi: must be > 0, got {phi!r}")
        if not min_std > 0:
            raise ConfigError(f"model.init_args.min_std: must be > 0, got {min_std!r}")
        self.init_args_net = dict(
            visible_precision=visible_precision, slab_precision=slab_precision, phi=phi, slab_mean=slab_mean,
            spike_bias=spike_bias, min_precision=min_precision, learn_visible_precision=learn_visible_precision,
            learn_phi=learn_phi,
        )
        self.standardize, self.min_std, self.exact_max_visible = standardize, min_std, exact_max_visible
        super().__init__(n_hidden=n_hidden, ais=ais, optimizer=optimizer, **kwargs)
        self.register_buffer("data_mean", torch.zeros(self.data_dim))
        self.register_buffer("data_std", torch.ones(self.data_dim))
        self.register_buffer("ais_precision", torch.ones(self.data_dim))

    rbm: SpikeSlabRBMNet  # type: ignore[assignment]

    def _make_rbm(self, weight_std: float) -> SpikeSlabRBMNet:  # type: ignore[override]
        return SpikeSlabRBMNet(self.data_dim, self.n_hidden, weight_std=weight_std, **self.init_args_net)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ spaces and density
    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        # change of variables x -> (x - m) / s: log|dv/dx| = -sum_d log s_d
        log_det = -self.data_std.log().sum() if self.standardize else 0.0
        return -self.free_energy(x) + log_det

    def _init_from_data(self, mean: Tensor, sq_mean: Tensor) -> None:
        std = (sq_mean - mean.pow(2)).clamp_min(0).sqrt().clamp_min(self.min_std)
        if self.standardize:
            self.data_mean.copy_(mean.to(self.data_mean))
            self.data_std.copy_(std.to(self.data_std))
            self.ais_base.zero_()
            self.ais_precision.fill_(1.0)
        else:
            self.ais_base.copy_(mean.to(self.ais_base))
            self.ais_precision.copy_(std.pow(-2).to(self.ais_precision))

    # ------------------------------------------------------------------ log Z
    def exact_log_partition(self) -> Optional[float]:
        if self.n_hidden > self.ais.exact_max_units or self.data_dim > self.exact_max_visible:
            return None
        return ssrbm_log_partition_enumerate(self.rbm, max_units=max(self.ais.exact_max_units, 1))

    def annealing_path(self) -> AnnealingPath:
        return SpikeSlabAnnealingPath(self.rbm, self.ais_base, self.ais_precision)

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        """The shared RBM terms, plus ``progress`` (epochs done) at validation for the checkpoint monitor."""
        terms = super().loss_terms(x, stage)
        if stage == "val":
            terms["progress"] = torch.tensor(float(self.current_epoch + 1), device=self.device)
        return terms

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """One mean-field up-down pass (:meth:`~lightning_gm.nn.ssrbm.SpikeSlabRBMNet.reconstruct`), in data space."""
        return self.to_data_space(self.rbm.reconstruct(self.to_model_space(x))).reshape(x.shape)

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """``filters`` (columns of ``W``, min-max scaled) and ``fantasy`` (persistent chains, data space)."""
        out = {"filters": scale_rows(self.filter_rows()[: max(n, 100)])}
        if self.cd.persistent and bool(self.chains_ready):
            out["fantasy"] = self._display(self.chains[:n])
        return out

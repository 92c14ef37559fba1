r"""Convolutional RBM with probabilistic max-pooling (:class:`ConvRBM`), and the CD step it shares with the
convolutional DBN (:class:`ConvCD`; :class:`~lightning_gm.models.conv_dbn.ConvDBN`).

Both wrap :class:`~lightning_gm.nn.conv_rbm.ConvolutionalRBM` (the maths) and train by CD-k (or PCD) on
the closed-form free energy, plus the paper's two regularisers:

.. math::

    \mathcal L = \frac{1}{H_h W_h}\Big[\overline{F(v_{\text{data}})} - \overline{F(\operatorname{sg}[v_{\text{model}}])}\Big]
      + \tfrac{\lambda_W}{2}\lVert W\rVert^2 + \lambda_s \sum_k \operatorname{sg}[q_k - p]\, b_k,
    \qquad q_k = \frac{1}{N H_h W_h}\sum_{n,ij} P(h^k_{ij} = 1 \mid v_n),

(the CD gradient averaged over the :math:`H_h W_h` detector positions, as in Lee et al.'s code, so the learning
rate does not depend on the image size), whose last term has gradient :math:`\lambda_s (q_k - p)` on the detector bias :math:`b_k` only: the sparsity
regulariser of Lee, Ekanadham & Ng (2008) as used by Lee et al. (2009), "in practice only the hidden biases
are updated" to push the mean detector activation of every group towards the target :math:`p`.

:class:`ConvRBM` test log-likelihood: :math:`\log p(v) = -F(v) - \log Z` with the closed-form :math:`F` and
:math:`\log Z` exact (enumeration of the visibles, tiny images) or forward AIS from the data's base-rate model
(:class:`~lightning_gm.estimators.conv_rbm.ConvRBMAnnealingPath`, through the shared
:class:`~lightning_gm.models.energy.PartitionMixin`); estimator ``exact`` or ``ais``.

:class:`~lightning_gm.models.conv_dbn.ConvDBN` stacks these layers greedily (its own module).

References:
    Lee, Grosse, Ranganath & Ng (2009), Convolutional deep belief networks for scalable unsupervised learning
    of hierarchical representations, ICML; Lee, Ekanadham & Ng (2008), Sparse deep belief net model for
    visual area V2; Hinton (2002) (CD); Salakhutdinov & Murray (2008) (AIS).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule, AnnealingPath, base_rate_log_odds
from lightning_gm.estimators.conv_rbm import ConvRBMAnnealingPath, conv_rbm_log_partition_enumerate
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.energy import (
    FLAT_AIS_KEYS,
    FLAT_CD_KEYS,
    FLAT_PENALTY_KEYS,
    ChainStream,
    PartitionMixin,
    batch_data,
    scale_rows,
    seeded_rng,
    sgd_conv_rbm,
)
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.nn.conv_rbm import ConvolutionalRBM, VisibleType
from lightning_gm.nn.rbm import CD, Penalties

__all__ = ["ConvRBM", "ConvCD", "image_shape", "check_positive"]


def image_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of the data: image-shaped as is, a square vector ``(s*s,)`` as ``(1, s, s)``."""
    shape = tuple(int(s) for s in data_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        s = math.isqrt(shape[0])
        return (1, s, s)
    raise ConfigError(f"model.init_args.data_shape={list(shape)}: a convolutional RBM needs images (C, H, W) "
                      f"or square vectors; use data.init_args.flatten=false")


def check_positive(**kw: Any) -> None:
    for key, value in kw.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(int(v) < 1 for v in values):
            raise ConfigError(f"model.init_args.{key} must be >= 1, got {value}")


class ConvCD(ChainStream):
    """CD-k/PCD update, sparsity surrogate and chain random stream shared by :class:`ConvRBM` and :class:`ConvDBN`."""

    penalties: Penalties

    def _cd_terms(self, rbm: ConvolutionalRBM, v: Tensor, chains: Optional[Tensor], k: int) -> dict[str, Tensor]:
        start = v if chains is None else chains
        v_model = rbm.gibbs(start, k, self.generator).v
        if chains is not None:
            chains.copy_(v_model)
        # per-position average (Lee et al.'s code): gradients of O(1) whatever the map size, comparable to the sparsity term
        loss = rbm.cd_loss(v, v_model) / (rbm.hidden_size[0] * rbm.hidden_size[1])
        h_mean, p_mean = rbm.mean_hiddens(v.detach())
        q = h_mean.detach().mean((0, 2, 3))
        penalties = self.penalties
        if penalties.weight_cost > 0:
            loss = loss + 0.5 * penalties.weight_cost * rbm.W.pow(2).sum()
        if penalties.sparsity_cost > 0:
            loss = loss + penalties.sparsity_cost * ((q - penalties.sparsity_target) * rbm.b).sum()
        return {"loss": loss, "hidden_activity": q.mean(), "pool_activity": p_mean.detach().mean()}


class ConvRBM(GroupedHyperparameters, ConvCD, PartitionMixin, GenerativeModel):
    r"""Convolutional RBM with probabilistic max-pooling (family ``rbm``), trained by CD-k or PCD.

    .. math::

        E(v, h) = U(v) - \sum_{k,ij} h^k_{ij}\big(b_k + (\tilde W^k * v)_{ij}\big), \quad \textstyle\sum_{B_\alpha} h^k \le 1,
        \qquad F(v) = U(v) - \sum_{k,\alpha}\log\Big(1 + \sum_{B_\alpha} e^{I^k_{ij}}\Big).

    Monitors: ``{stage}/recon_error`` (checkpoint monitor), ``{stage}/free_energy``, ``{stage}/hidden_activity``
    (mean detector probability, driven towards ``penalties.sparsity_target``), ``{stage}/pool_activity``; at test
    ``test/nll`` (estimator ``exact`` or ``ais``), ``test/logZ``, its standard error and AIS effective sample size.
    Pictures (:class:`~lightning_gm.callbacks.rbm.RBMPictures`): ``filters`` (first-layer filters) and
    ``pooled`` (the pooling-unit probabilities of one validation image, one map per group).

    Args:
        data_shape: ``(C, H, W)`` (or a square vector, seen as ``(1, s, s)``); linked from the data.
        n_filters: groups :math:`K`.
        filter_size: filter side :math:`n_w`.
        pool_size: pooling block side :math:`C` (1 = plain convolutional RBM).
        visible: ``binary`` or ``gaussian`` (unit variance; for standardised real-valued data; no AIS then).
        cd: contrastive divergence (:class:`~lightning_gm.nn.rbm.CD`: sweeps ``k``, PCD chains instead of CD-k from the
            data, their number); CD-k by default.
        weight_std: standard deviation of the initial filters.
        penalties: the regularisers (:class:`~lightning_gm.nn.rbm.Penalties`): ``weight_cost`` :math:`\lambda_W` (L2 on
            the filters), ``sparsity_target`` :math:`p` (target mean detector activation per group) and ``sparsity_cost``
            :math:`\lambda_s` (0 = no sparsity regulariser); ``sparsity_decay`` is not used: :math:`q_k` is each
            batch's mean activation, as in Lee et al.'s code.
        init_visible_bias: set the per-channel visible bias to the log-odds of the training data's mean at fit start.
        sample_steps: Gibbs sweeps behind :meth:`sample`.
        ais: the test :math:`\log Z` (:class:`~lightning_gm.estimators.ais.AISSchedule`; literature 100 x 14,500, a
            reduced schedule is stated in the estimator label; exact enumeration of the visibles up to
            ``ais.exact_max_units`` units).
        optimizer: optimiser factory (default SGD, lr 0.01, momentum 0.9).
        lr_scheduler: optional scheduler factory.

    References:
        Lee, Grosse, Ranganath & Ng (2009); Lee, Ekanadham & Ng (2008); Salakhutdinov & Murray (2008).
    """

    family = "rbm"
    groups = ("cd", "penalties", "ais")
    flat_keys = {**FLAT_CD_KEYS, **FLAT_PENALTY_KEYS, **FLAT_AIS_KEYS}  # checkpoints written before the groups still load
    monitor = "val/recon_error"
    monitor_mode = "min"
    ais_base: Tensor
    chains: Tensor

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        n_filters: int = 40,
        filter_size: int = 6,
        pool_size: int = 2,
        visible: VisibleType = "binary",
        cd: CD = CD(persistent=False),
        weight_std: float = 0.01,
        penalties: Penalties = Penalties(weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=1.0),
        init_visible_bias: bool = True,
        sample_steps: int = 500,
        ais: AISSchedule = AISSchedule(),
        optimizer: OptimizerCallable = sgd_conv_rbm,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(data_shape, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], frame=inspect.currentframe())
        self.cd, self.penalties, self.ais = CD.coerce(cd), Penalties.coerce(penalties), AISSchedule.coerce(ais)
        check_positive(n_filters=n_filters, filter_size=filter_size, pool_size=pool_size)
        c, h, w = self.image = image_shape(data_shape)
        if filter_size > min(h, w):
            raise ConfigError(f"model.init_args.filter_size={filter_size} is larger than the images ({h}x{w})")
        self.rbm = ConvolutionalRBM(c, (h, w), n_filters, filter_size, pool_size, visible, weight_std)
        self.init_visible_bias, self.sample_steps = init_visible_bias, sample_steps
        self.register_buffer("ais_base", torch.zeros(self.rbm.n_visible))
        self.register_buffer("chains", torch.zeros(self.cd.chains if self.cd.persistent else 0, c, h, w))
        self.register_buffer("chains_ready", torch.tensor(False))
        self._picture_example: Optional[Tensor] = None

    # ------------------------------------------------------------------ data
    def to_model_space(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.image).to(self.rbm.W.dtype)

    def setup(self, stage: str) -> None:
        """At fit start (not when resuming): the visible biases and the AIS base-rate model from the training data."""
        if stage != "fit" or self.trainer.ckpt_path is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_dataloader"):
            rank_zero_warn("ConvRBM: no DataModule, so no visible-bias initialisation")
            return
        total, count = torch.zeros(self.rbm.n_visible, dtype=torch.float64), 0
        with seeded_rng(12345):
            for batch in dm.train_dataloader():
                x = batch_data(batch).reshape(batch_data(batch).shape[0], -1).double()
                total += x.sum(0)
                count += x.shape[0]
        if count == 0:
            raise ConfigError("the training set is empty: nothing to initialise the ConvRBM from")
        mean = total / count
        self.ais_base.copy_(base_rate_log_odds(mean.unsqueeze(0)).to(self.ais_base))
        if self.init_visible_bias and self.rbm.visible == "binary":
            per_channel = mean.reshape(self.image[0], -1).mean(1).clamp(1e-3, 1 - 1e-3)
            with torch.no_grad():
                self.rbm.c.copy_((per_channel.log() - (-per_channel).log1p()).to(self.rbm.c))

    # ------------------------------------------------------------------ training
    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        v = self.to_model_space(x)
        with torch.no_grad():
            recon = self.rbm.reconstruction_error(v)
        if stage != "train":
            if stage == "val" and self._picture_example is None:
                self._picture_example = v[:1].detach().clone()
            fe = self.rbm.free_energy(v).mean()
            _, p_mean = self.rbm.mean_hiddens(v)
            return {"loss": fe, "free_energy": fe, "recon_error": recon, "pool_activity": p_mean.mean()}
        chains = None
        if self.cd.persistent:
            chains = self.chains
            if not bool(self.chains_ready):
                with torch.no_grad():
                    chains.copy_(self.rbm.sample_visibles(torch.zeros(self.cd.chains, self.rbm.n_filters,
                                                                      *self.rbm.hidden_size, device=self.device),
                                                          self.generator))
                    self.chains_ready.fill_(True)
        return {**self._cd_terms(self.rbm, v, chains, self.cd.k), "recon_error": recon}

    # ------------------------------------------------------------------ likelihood
    def exact_log_partition(self) -> Optional[float]:
        """Enumerate the visibles (tiny images: at most ``ais.exact_max_units`` of them)."""
        if self.rbm.n_visible > self.ais.exact_max_units:
            return None
        return conv_rbm_log_partition_enumerate(self.rbm, self.ais.exact_max_units)

    def annealing_path(self) -> AnnealingPath:
        if self.rbm.visible != "binary":
            raise ConfigError("ConvRBM: AIS is implemented for binary visibles only (model.init_args.visible=binary)")
        return ConvRBMAnnealingPath(self.rbm, self.ais_base)

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        return -self.rbm.free_energy(self.to_model_space(x))

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``sample_steps`` Gibbs sweeps from the base-rate model; the last conditional means, ``(n, *data_shape)``."""
        v0 = torch.bernoulli(torch.sigmoid(self.ais_base).expand(n, -1), generator=self.generator)
        state = self.rbm.gibbs(v0.reshape(n, *self.image), self.sample_steps, self.generator)
        return state.v_mean.reshape(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        v = self.to_model_space(x)
        return self.rbm.mean_visibles(self.rbm.mean_hiddens(v)[0]).reshape(x.shape)

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """For :class:`~lightning_gm.callbacks.rbm.RBMPictures`: ``filters`` (each filter min-max scaled, first
        channel) and ``pooled`` (pooling-unit probabilities of the first validation image, one map per group)."""
        out = {"filters": scale_rows(self.rbm.W[:, 0].reshape(self.rbm.n_filters, -1))}
        if self._picture_example is not None:
            p = self.rbm.pool_probs(self._picture_example.to(self.device))[0]
            out["pooled"] = p.reshape(self.rbm.n_filters, -1).clamp(0, 1).float().cpu()
        return out

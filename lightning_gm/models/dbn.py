r"""Deep belief networks (Hinton, Osindero & Teh 2006): a greedy layer-wise stack of RBMs trained in one ``fit``.

Layer ``l`` is the Bernoulli RBM :math:`(h_l, h_{l+1})` with :math:`h_0 = v`. The layer being trained is a
*phase* derived from ``current_epoch`` and ``epochs_per_layer`` (so resuming from ``last.ckpt`` lands in
the right layer) and logged as ``train/layer``. RBM ``l`` is trained by CD-k/PCD on the upward pass of the
data through the layers below: the factorial posteriors :math:`q(h_{l} \mid h_{l-1}) = \sigma(c + W^\top h_{l-1})`,
passed up as probabilities (``propagate="mean"``, Hinton & Salakhutdinov's code, lower variance) or
as binary samples (``propagate="sample"``, exactly the aggregated posterior that the bound below scores).

The generative model is the top RBM over :math:`(h_{L-1}, h_L)` and directed sigmoid layers below:

.. math::

    p(v, h_1, \dots, h_{L-1}) = p_{\text{top}}(h_{L-1}) \prod_{l=1}^{L-1} p(h_{l-1} \mid h_l), \qquad
    p(h_{l-1} \mid h_l) = \prod_i \sigma\big((2h_{l-1,i} - 1)(b_{i} + W_{i:} h_l)\big),

with :math:`p_{\text{top}}(h) = e^{-F_{\text{top}}(h)} / Z_{\text{top}}`. Sampling: Gibbs in the top RBM, then one
downward pass. Test log-likelihood: the variational lower bound of Salakhutdinov & Murray (2008) with the
upward posteriors as :math:`q`,

.. math::

    \log p(v) \ge \mathbb E_{q}\Big[\log p(v, h_{1:L-1}) - \log q(h_{1:L-1} \mid v)\Big],
    \qquad q(h_{1:L-1} \mid v) = \prod_{l=1}^{L-1} q(h_l \mid h_{l-1}),

estimated with ``bound_samples`` samples as an importance-weighted bound
:math:`\log \frac1S \sum_s w_s` (a lower bound in expectation, at least as tight as the plain one), and
:math:`\log Z_{\text{top}}` exact (estimator ``bound``) or from AIS (estimator ``ais+bound``). A
single-layer DBN is an RBM: estimator ``exact`` / ``ais``.

Under DDP, layers that are not being trained receive no gradient, so use
``--trainer.strategy=ddp_find_unused_parameters_true``.

References:
    Hinton, Osindero & Teh (2006), A fast learning algorithm for deep belief nets;
    Hinton & Salakhutdinov (2006), Reducing the dimensionality of data with neural networks;
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule, AnnealingPath, base_rate_log_odds
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.estimators.rbm_ais import RBMAnnealingPath
from lightning_gm.estimators.reverse import ReverseStart
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.energy import (
    FLAT_AIS_KEYS,
    FLAT_CD_KEYS,
    ChainStream,
    PartitionMixin,
    batch_data,
    scale_rows,
    seeded_rng,
    sgd_binary_rbm,
)
from lightning_gm.models.greedy import GreedySchedule, layer_sizes
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.models.momentum import FLAT_MOMENTUM_KEYS, MomentumWarmup
from lightning_gm.models.rbm import cd_step
from lightning_gm.nn.rbm import CD, BernoulliRBM, bernoulli

__all__ = ["DBN", "bernoulli_log_prob"]


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    r""":math:`\sum_i x_i \log\sigma(a_i) + (1 - x_i)\log\sigma(-a_i) = \sum_i x_i a_i - \operatorname{softplus}(a_i)`,
    summed over the last dimension (overflow-safe)."""
    return (x * logits - F.softplus(logits)).sum(-1)


class DBN(GroupedHyperparameters, GreedySchedule, ChainStream, PartitionMixin, GenerativeModel):
    r"""Deep belief network: greedy layer-wise RBMs (family ``dbn``), test bound ``ais+bound``.

    Args:
        data_shape: shape of one example (linked from the data); binary (or [0, 1]) data.
        hidden: hidden layer sizes, bottom to top (784-500-500-2000 is ``[500, 500, 2000]``).
        epochs_per_layer: epochs of greedy training of each layer (same length as ``hidden``). Set
            ``trainer.max_epochs`` to their sum; extra epochs keep training the top layer.
        cd: contrastive divergence of every layer (:class:`~lightning_gm.nn.rbm.CD`: sweeps ``k``, PCD or CD-k, the
            number of persistent chains per layer and process); CD-k by default.
        propagate: ``mean`` (probabilities) or ``sample`` (binary states) as the data of the next layer.
        weight_std, weight_cost: initial weight scale and L2 cost on the weights (as :class:`~lightning_gm.models.RBM`).
        momentum: the warm-up (:class:`~lightning_gm.models.momentum.MomentumWarmup`: momentum ``initial`` for the
            first ``epochs`` epochs of every layer's phase, then the optimiser's own).
        init_visible_bias: at the start of each layer's phase, set its visible biases to the log-odds of its
            training input (also the AIS base-rate model of the top layer).
        sample_steps: Gibbs sweeps in the top RBM behind :meth:`sample`.
        bound_samples: posterior samples ``S`` per test example of the importance-weighted bound.
        ais: the top RBM's :math:`\log Z` (:class:`~lightning_gm.estimators.ais.AISSchedule`; literature 100 x 14,500;
            exact when the top RBM's smaller layer has at most ``ais.exact_max_units`` units).
        optimizer: optimiser factory (default SGD, lr 0.1, momentum 0.9).
        lr_scheduler: optional scheduler factory.

    References:
        Hinton, Osindero & Teh (2006); Salakhutdinov & Murray (2008).
    """

    family = "dbn"
    groups = ("cd", "momentum", "ais")
    flat_keys = {**FLAT_CD_KEYS, **FLAT_MOMENTUM_KEYS, **FLAT_AIS_KEYS}  # checkpoints written before the groups still load
    #: greedy training has no validation objective comparable across layers: the checkpoint tested is
    #: the last one (``val/stack_progress`` = epochs done, only ever increases)
    monitor = "val/stack_progress"
    monitor_mode = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        hidden: Sequence[int] = (500, 500, 2000),
        epochs_per_layer: Sequence[int] = (10, 10, 10),
        cd: CD = CD(persistent=False),
        propagate: Literal["mean", "sample"] = "mean",
        weight_std: float = 0.01,
        weight_cost: float = 2e-4,
        momentum: MomentumWarmup = MomentumWarmup(),
        init_visible_bias: bool = True,
        sample_steps: int = 1000,
        bound_samples: int = 10,
        ais: AISSchedule = AISSchedule(),
        optimizer: OptimizerCallable = sgd_binary_rbm,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(data_shape, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], frame=inspect.currentframe())
        self.cd, self.momentum, self.ais = CD.coerce(cd), MomentumWarmup.coerce(momentum), AISSchedule.coerce(ais)
        hidden = layer_sizes(hidden)
        self.init_schedule(epochs_per_layer, len(hidden))
        if propagate not in ("mean", "sample"):
            raise ConfigError(f"model.init_args.propagate must be 'mean' or 'sample', got {propagate!r}")
        if bound_samples < 1:
            raise ConfigError(f"model.init_args.bound_samples must be >= 1, got {bound_samples}")
        self.sizes = [self.data_dim, *hidden]
        self.propagate = propagate
        self.weight_cost = weight_cost
        self.init_visible_bias, self.sample_steps, self.bound_samples = init_visible_bias, sample_steps, bound_samples
        self.rbms = nn.ModuleList(
            BernoulliRBM(n_v, n_h, weight_std=weight_std) for n_v, n_h in zip(self.sizes[:-1], self.sizes[1:])
        )
        for l, n_v in enumerate(self.sizes[:-1]):
            self.register_buffer(f"chains_{l}", torch.zeros(self.cd.chains if self.cd.persistent else 0, n_v))
            self.register_buffer(f"base_log_odds_{l}", torch.zeros(n_v))
        self.register_buffer("chains_ready", torch.zeros(len(hidden), dtype=torch.bool))
        self.register_buffer("epochs_started", torch.zeros((), dtype=torch.long))  # the recipe's progress
        self._ddp_params_and_buffers_to_ignore = [f"chains_{l}" for l in range(len(hidden))]
        self._initialised_layer = -1

    # ------------------------------------------------------------------ structure
    @property
    def depth(self) -> int:
        """Layers of the model the fit has produced, by the recipe's phase: all of them once the top layer's phase
        has begun (or when no epoch has been run: a model built by hand), else the layers up to the one the last
        epoch trained (``epochs_started``, a buffer, so a checkpoint knows it). The likelihood, the samples and the
        estimator label are those of this ``depth``-layer DBN (greedy training defines exactly that model after
        each phase)."""
        started = int(self.epochs_started)
        return self.num_layers if started == 0 else self.layer_at(started - 1) + 1

    def _chains(self, layer: int) -> Tensor:
        return getattr(self, f"chains_{layer}")

    # ------------------------------------------------------------------ upward pass
    @torch.no_grad()
    def up(self, x: Tensor, layer: int, mode: Optional[str] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """The input of RBM ``layer``: ``x`` propagated through the RBMs below (means or samples)."""
        h = x.reshape(x.shape[0], -1).to(self.rbms[0].W.dtype)
        for rbm in self.rbms[:layer]:
            p = rbm.mean_hiddens(h)
            h = p if (mode or self.propagate) == "mean" else bernoulli(p, generator)
        return h

    # ------------------------------------------------------------------ training
    def _init_layer(self, layer: int) -> None:
        """Visible biases of RBM ``layer`` (and its AIS base) from the log-odds of its training input.
        Every process reads the whole training set with the same fixed seed, and rank 0's values are
        broadcast, so all processes agree."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            rank_zero_warn("DBN: no DataModule, so no visible-bias initialisation")
            return
        total = torch.zeros(self.sizes[layer], dtype=torch.float64, device=self.device)
        count = 0
        with seeded_rng(12345 + layer):
            for batch in dm.train_dataloader():
                h = self.up(batch_data(batch).to(self.device), layer)
                total += h.double().sum(0)
                count += h.shape[0]
        log_odds = base_rate_log_odds((total / max(count, 1)).unsqueeze(0)).to(self.device)
        log_odds = self.trainer.strategy.broadcast(log_odds, src=0)
        getattr(self, f"base_log_odds_{layer}").copy_(log_odds.to(self.rbms[layer].b))
        if self.init_visible_bias:
            with torch.no_grad():
                self.rbms[layer].b.copy_(log_odds.to(self.rbms[layer].b))

    def on_train_epoch_start(self) -> None:
        self.epochs_started.fill_(self.current_epoch + 1)
        layer = self.current_layer
        if self.starts_phase() and self._initialised_layer != layer:
            self._init_layer(layer)
            self.forget_momentum()
        self._initialised_layer = layer
        self.momentum.apply(self.trainer.optimizers, self.current_epoch - self.phase_start(layer))

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        layer = self.current_layer
        rbm = self.rbms[layer]
        v = self.up(x, layer, generator=self.generator if stage == "train" else None)
        terms = self.layer_terms(rbm, v, stage)
        if stage != "train":
            return terms
        chains = None
        if self.cd.persistent:
            chains = self._chains(layer)
            if not bool(self.chains_ready[layer]):
                with torch.no_grad():
                    h0 = torch.zeros(self.cd.chains, rbm.n_hidden, device=self.device, dtype=rbm.W.dtype)
                    chains.copy_(rbm.sample_visibles(h0, generator=self.generator))
                    self.chains_ready[layer] = True
        v_model = cd_step(rbm, v, self.cd.k, chains, self.generator)
        loss = rbm.cd_loss(v, v_model)
        if self.weight_cost > 0:
            loss = loss + 0.5 * self.weight_cost * rbm.W.pow(2).sum()
        return {**terms, "loss": loss}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._trainer is not None and self.trainer.world_size > 1:
            checkpoint["pcd_chains_per_rank"] = {
                l: self.all_gather(self._chains(l)).detach().cpu() for l in range(self.num_layers)
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        per_rank = checkpoint.get("pcd_chains_per_rank")
        if per_rank is not None and self._trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            for l, chains in per_rank.items():
                if chains.shape[0] == world:
                    checkpoint["state_dict"][f"chains_{l}"] = chains[rank].clone()
        state = checkpoint.get("state_dict", {})
        if "epochs_started" not in state and "chains_ready" in state:  # a checkpoint written before the buffer
            state["epochs_started"] = torch.tensor(int(checkpoint.get("epoch", -1)) + 1, dtype=torch.long)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(self, n: int, steps: Optional[int] = None) -> Tensor:
        """Gibbs sampling in the top RBM (``steps`` sweeps from its visible marginals at ``h = 0``), then a
        downward pass of samples, with the conditional means of the last (data) layer."""
        top = self.rbms[self.depth - 1]
        h0 = torch.zeros(n, top.n_hidden, device=self.device, dtype=top.W.dtype)
        h = top.gibbs_vhv(top.sample_visibles(h0), steps or self.sample_steps).v
        for l in range(self.depth - 2, -1, -1):
            h = self.rbms[l].mean_visibles(h) if l == 0 else self.rbms[l].sample_visibles(h)
        if self.depth == 1:
            h = top.mean_visibles(top.sample_hiddens(h))
        return h.reshape(n, *self.data_shape)

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """First-layer filters (columns of ``W_0``, min-max scaled), for :class:`~lightning_gm.callbacks.RBMPictures`."""
        return {"filters": scale_rows(self.rbms[0].W.T[:100])}

    # ------------------------------------------------------------------ the bound
    def annealing_path(self) -> AnnealingPath:
        """The top RBM's path from its base-rate model (the log-odds of its training input)."""
        return RBMAnnealingPath(self.rbms[self.depth - 1], getattr(self, f"base_log_odds_{self.depth - 1}"))

    def exact_log_partition(self) -> Optional[float]:
        top = self.rbms[self.depth - 1]
        if min(top.n_visible, top.n_hidden) > self.ais.exact_max_units:
            return None
        return log_partition_enumerate(top, max_units=self.ais.exact_max_units)

    @property
    def estimator(self) -> str:
        label = self.partition_label() if self.depth == 1 else self.partition_label(exact="bound", ais="ais+bound")
        return label if self.depth == self.num_layers else f"{label} ({self.phase_description})"

    @property
    def phase_description(self) -> str:
        """Which model the greedy recipe has produced so far."""
        return f"greedy phase: {self.depth} of {self.num_layers} layers trained"

    def summary_fields(self) -> dict[str, Any]:
        """The base's warnings and, when the fit stopped before the top layer's phase, the phase and a warning."""
        out = super().summary_fields()
        if self.depth < self.num_layers:
            out["phase"] = self.phase_description
            out.setdefault("warnings", []).append(
                f"DBN: the fit stopped before the top layer's phase ({self.phase_description}); test/nll is that of "
                f"the {self.depth}-layer DBN trained so far, not of the {self.num_layers}-layer recipe")
        return out

    @torch.no_grad()
    def sample_posterior(self, x: Tensor, n: int, generator: Optional[torch.Generator] = None) -> list[Tensor]:
        """``n`` samples of :math:`q(h_1, \\dots, h_{L-1} \\mid v)`: a list of ``(n, B, size_l)`` tensors."""
        h = x.reshape(x.shape[0], -1).to(self.rbms[0].W.dtype).expand(n, -1, -1)
        out = []
        for rbm in self.rbms[: self.depth - 1]:
            h = bernoulli(rbm.mean_hiddens(h), generator)
            out.append(h)
        return out

    def log_weights(self, x: Tensor, hs: Sequence[Tensor]) -> Tensor:
        r""":math:`\log p(v, h_{1:L-1}) + \log Z_{\text{top}} - \log q(h_{1:L-1} \mid v)` for given posterior samples.

        Args:
            x: data ``(B, *data_shape)``.
            hs: ``[h_1, ..., h_{L-1}]``, each ``(..., B, size_l)`` (a leading sample dimension broadcasts).

        Returns:
            ``(..., B)``; :math:`\log p(v) + \log Z` is :math:`\log E_q[e^{\text{this}}]` exactly.
        """
        if len(hs) != self.depth - 1:
            raise ValueError(f"need {self.depth - 1} hidden layers of samples, got {len(hs)}")
        v = x.reshape(x.shape[0], -1).to(self.rbms[0].W.dtype)
        below = [v, *hs]  # v (B, D) broadcasts against the samples' leading dimensions
        total = -self.rbms[self.depth - 1].free_energy(below[-1])  # log p_top(h_{L-1}) + log Z
        for l in range(self.depth - 1):
            rbm, lower, upper = self.rbms[l], below[l], below[l + 1]
            total = total + bernoulli_log_prob(lower, rbm.visible_logits(upper))  # log p(h_l | h_{l+1})
            total = total - bernoulli_log_prob(upper, rbm.hidden_logits(lower))  # - log q(h_{l+1} | h_l)
        return total

    def reverse_annealing_start(self, x: Tensor, chains: int, generator: Optional[torch.Generator] = None) -> ReverseStart:
        r"""RAISE for the top RBM inside the bound: for each of the ``bound_samples`` posterior samples :math:`h` of
        an example, reverse annealing of the top RBM from :math:`h_{L-1}` replaces :math:`p_{\text{top}}(h_{L-1})`
        by its unbiased annealing-model estimate, so the average over samples and chains (``chains * bound_samples``
        per example) is unbiased for the DBN-with-annealed-top density and its log a stochastic lower bound
        (Burda et al. 2015): numerator :math:`\log p(v \mid h) - \log q(h \mid v) - F_{\text{top}}(h_{L-1})`."""
        b = x.shape[0]
        if self.depth == 1:
            top = x.reshape(b, -1).to(self.rbms[0].W.dtype)
            numerator = -self.rbms[0].free_energy(top)
        else:
            hs = self.sample_posterior(x, self.bound_samples, generator)
            numerator = self.log_weights(x, hs).reshape(-1)  # (S * B,): log p(v|h) - log q(h|v) - F_top
            top = hs[-1].reshape(-1, hs[-1].shape[-1])
        return ReverseStart(self.annealing_path(), top.repeat(chains, 1),
                            numerator.detach().to(torch.float64).repeat(chains), b)

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """The importance-weighted bound with ``bound_samples`` samples, plus :math:`\\log Z_{\\text{top}}`."""
        if self.depth == 1:
            return -self.rbms[0].free_energy(x.reshape(x.shape[0], -1))
        lw = self.log_weights(x, self.sample_posterior(x, self.bound_samples))
        return torch.logsumexp(lw, dim=0) - math.log(self.bound_samples)

r"""Deep Boltzmann machines (family ``dbm``): layer-wise pretraining, composition and joint training in one ``fit``.

The model is the binary DBM of :class:`~lightning_gm.nn.dbm.BinaryDBM`,
:math:`E = -\sum_l b_l^\top x_l - \sum_l x_{l-1}^\top W_l x_l` with :math:`x_0 = v`. One ``fit`` runs the
recipe of Salakhutdinov & Hinton (2009, 2012) as *phases* derived from ``current_epoch`` (so a run resumed
from ``last.ckpt`` continues in its phase), logged as ``train/phase`` (``0 .. L-1``: pretraining RBM
``l + 1``; ``L``: joint training) with ``train/epochs_in_phase``:

1. **Pretraining** of modified RBMs :math:`R_l` by CD-k on the hidden probabilities of the RBM below (the
   bottom and top ones with doubled inputs), and

2. **Composition** of them into the DBM at the first joint epoch (middle weights halved, shared biases
   averaged): both in :mod:`lightning_gm.models.dbm_pretraining`.

3. **Joint training**: the gradient of the log-likelihood with a mean-field positive phase (``mf_iterations``
   rounds at most, stop below ``mf_tol``, initialised by a doubled bottom-up pass) and a persistent-chain
   negative phase (``num_chains`` chains, ``gibbs_steps`` odd/even sweeps per update), implemented as the
   surrogate loss :math:`\frac1B\sum E(v, \mu) - \frac1M\sum E(\tilde x)` plus
   :math:`\tfrac12\lambda\sum_l\|W_l\|^2`.

``centered=True`` trains a centred DBM (Montavon & Mueller 2012) jointly from the first epoch (no
pretraining): offsets are the data mean for :math:`v` and running averages (rate ``offset_rate``) of the
data-side mean-field means for the hidden layers, moved with :meth:`~lightning_gm.nn.dbm.BinaryDBM.shift_offsets`
so the distribution is unchanged by each move.

Test: the mean-field lower bound minus :math:`\log Z`,

.. math::

    \log p(v) \ge -E(v, \mu) + \sum_l \mathcal H(\mu_l) - \log Z,

with :math:`\log Z` computed once per test (``on_test_start``, through the shared
:class:`~lightning_gm.models.energy.PartitionMixin`): exact by enumeration when the smaller of the odd/even
layer sets has at most ``ais.exact_max_units`` units (estimator ``exact+meanfield``), else by AIS with the
visible and top layers summed out (``ais.runs`` chains x ``ais.steps`` steps; estimator ``ais+meanfield``).
Forward AIS under-estimates :math:`\log Z` on average, so the reported bound can be slightly optimistic.

Under DDP the pretraining parameters of other phases get no gradient: use
``--trainer.strategy=ddp_find_unused_parameters_true``.

References:
    Salakhutdinov & Hinton (2009), Deep Boltzmann machines, AISTATS;
    Salakhutdinov & Hinton (2012), An efficient learning procedure for deep Boltzmann machines, Neural Computation 24;
    Montavon & Mueller (2012), Deep Boltzmann machines and the centering trick;
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule, AnnealingPath, base_rate_log_odds
from lightning_gm.estimators.dbm import DBMAnnealingPath, dbm_exact_log_partition, dbm_reverse_start
from lightning_gm.estimators.reverse import ReverseStart
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.dbm_pretraining import DBMPretraining
from lightning_gm.models.energy import FLAT_AIS_KEYS, PartitionMixin, batch_data, sgd_dbm
from lightning_gm.models.greedy import layer_sizes
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.nn.dbm import BinaryDBM

__all__ = ["DBM", "DBMLikelihood"]


class DBMLikelihood(GroupedHyperparameters, PartitionMixin, GenerativeModel):
    r"""The test log-likelihood of the binary DBM models (:class:`DBM`, :class:`~lightning_gm.models.mpdbm.MPDBM`):
    the mean-field lower bound :math:`-E(v, \mu) + \sum_l \mathcal H(\mu_l)` minus :math:`\log Z`, with the
    :class:`~lightning_gm.models.energy.PartitionMixin` hooks (exact enumeration, AIS from the visibles' base-rate
    model with the visible and top layers summed out, RAISE from the data) written once.

    A model sets ``dbm`` (:class:`~lightning_gm.nn.dbm.BinaryDBM`) and ``ais``, and implements
    :meth:`visible_base_log_odds` and :meth:`posterior_means`; :meth:`check_log_partition` refuses a configuration
    without a :math:`\log Z` (the MP-DBM's label units).
    """

    family = "dbm"
    groups = ("ais",)
    flat_keys = dict(FLAT_AIS_KEYS)  # checkpoints written before the groups still load
    dbm: BinaryDBM
    ais: AISSchedule

    def visible_base_log_odds(self) -> Tensor:
        """Log-odds of the AIS base-rate model of the visibles, ``(D,)``."""
        raise NotImplementedError

    def posterior_means(self, v: Tensor) -> list[Tensor]:
        """The mean-field means ``[v, mu_1, ..., mu_L]`` for visibles ``(B, D)`` (no gradient)."""
        raise NotImplementedError

    def check_log_partition(self) -> None:
        """Raise when this configuration has no :math:`\log Z` (every binary DBM has one)."""

    def visibles(self, x: Tensor) -> Tensor:
        """Data ``(B, *data_shape)`` as flat visibles ``(B, D)`` in the DBM's dtype."""
        return x.reshape(x.shape[0], -1).to(self.dbm.weights[0].dtype)

    def exact_log_partition(self) -> Optional[float]:
        self.check_log_partition()
        return dbm_exact_log_partition(self.dbm, self.ais.exact_max_units)

    def annealing_path(self) -> AnnealingPath:
        """From the visibles' base-rate model, visible and top layers summed out (Salakhutdinov & Hinton 2009)."""
        self.check_log_partition()
        return DBMAnnealingPath(self.dbm, self.visible_base_log_odds())

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """Per-example mean-field lower bound on :math:`\log p(v) + \log Z` (``(B,)``)."""
        return self.dbm.mean_field_bound(self.posterior_means(self.visibles(x)))

    def reverse_annealing_start(self, x: Tensor, chains: int, generator: Optional[torch.Generator] = None) -> ReverseStart:
        """RAISE from the data with the even hidden layers drawn from the mean-field posterior
        (:func:`~lightning_gm.estimators.dbm.dbm_reverse_start`)."""
        self.check_log_partition()
        v = self.visibles(x)
        return dbm_reverse_start(self.dbm, self.visible_base_log_odds(), v, self.posterior_means(v), chains, generator)

    @property
    def meanfield_label(self) -> str:
        """The estimator label of the bound: ``exact+meanfield`` or ``ais+meanfield <runs>x<steps>``."""
        return self.partition_label(exact="exact+meanfield", ais="ais+meanfield")


class DBM(DBMPretraining, DBMLikelihood):
    r"""Deep Boltzmann machine with binary units (family ``dbm``, test estimator ``ais+meanfield``).

    Args:
        data_shape: shape of one example (linked from the data); binary (or [0, 1]) data.
        hidden: hidden-layer sizes ``[H_1, ..., H_L]``.
        epochs_per_layer: pretraining epochs of each modified RBM (length ``L``); all zeros = no pretraining.
            Joint training runs from epoch ``sum(epochs_per_layer)`` to ``trainer.max_epochs``.
        pretrain_cd_k: Gibbs steps of CD-k in pretraining.
        mf_iterations: maximum mean-field rounds (positive phase, reconstructions and the test bound).
        mf_tol: stop the mean-field updates once no mean changes by more than this.
        num_chains: persistent chains (fantasy particles) of the negative phase.
        gibbs_steps: odd/even Gibbs sweeps of the chains per parameter update.
        weight_cost: L2 penalty :math:`\tfrac12\lambda\|W\|^2` on the weights (not the biases).
        max_norm: if set, after each update rescale every hidden unit's incoming weight vector to norm <= this.
        lr_decay: joint-phase learning rate :math:`s\,\epsilon_0 / (1 + \text{lr\_decay} \cdot t)`, ``t`` = joint epochs
            done (0 = constant); pretraining uses the optimiser's :math:`\epsilon_0`.
        joint_lr_scale: :math:`s`, the joint phase's learning rate relative to pretraining's (Salakhutdinov's code:
            0.05 for the RBMs, 0.001 for joint training, so 0.02; joint training diverges at the pretraining rate).
        centered: centred DBM (Montavon & Mueller 2012); requires no pretraining (``epochs_per_layer`` all 0).
        offset_rate: running-average rate of the centring offsets.
        weight_std: standard deviation of the initial weights.
        sample_steps: Gibbs sweeps of fresh chains in :meth:`sample` when the persistent chains cannot be used.
        ais: the test :math:`\log Z` (:class:`~lightning_gm.estimators.ais.AISSchedule`; exact when the smaller odd/even
            layer set has at most ``ais.exact_max_units`` units).
        optimizer: optimiser factory (default SGD lr 0.05, momentum 0.9).
        lr_scheduler: optional scheduler factory.
    """

    #: no validation objective is comparable across phases: the checkpoint tested is the last one
    #: (``val/progress`` = epochs done, only ever increases)
    monitor = "val/progress"
    monitor_mode = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        hidden: Sequence[int] = (500, 1000),
        epochs_per_layer: Sequence[int] = (100, 200),
        pretrain_cd_k: int = 1,
        mf_iterations: int = 10,
        mf_tol: float = 1e-6,
        num_chains: int = 100,
        gibbs_steps: int = 5,
        weight_cost: float = 0.0002,
        max_norm: Optional[float] = None,
        lr_decay: float = 0.0,
        joint_lr_scale: float = 0.02,
        centered: bool = False,
        offset_rate: float = 0.01,
        weight_std: float = 0.01,
        sample_steps: int = 1000,
        ais: AISSchedule = AISSchedule(),
        optimizer: OptimizerCallable = sgd_dbm,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(data_shape=data_shape, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.ais = AISSchedule.coerce(ais)
        hidden = layer_sizes(hidden)
        epochs_per_layer = [int(e) for e in epochs_per_layer]
        if len(epochs_per_layer) != len(hidden) or any(e < 0 for e in epochs_per_layer):
            raise ConfigError(
                f"DBM: epochs_per_layer={epochs_per_layer} must have one non-negative entry per hidden layer (hidden={hidden})"
            )
        if centered and sum(epochs_per_layer) > 0:
            raise ConfigError(
                f"DBM: centered=true trains jointly without pretraining; set epochs_per_layer to zeros (got {epochs_per_layer})"
            )
        for name, value in (("pretrain_cd_k", pretrain_cd_k), ("mf_iterations", mf_iterations), ("num_chains", num_chains),
                            ("gibbs_steps", gibbs_steps), ("sample_steps", sample_steps)):
            if value < 1:
                raise ConfigError(f"DBM: {name} must be >= 1, got {value}")
        if max_norm is not None and max_norm <= 0:
            raise ConfigError(f"DBM: max_norm must be positive or null, got {max_norm}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], frame=inspect.currentframe())
        self.hidden, self.epochs_per_layer = hidden, epochs_per_layer
        self.sizes = [self.data_dim, *hidden]
        self.pretrain_cd_k, self.mf_iterations, self.mf_tol = pretrain_cd_k, mf_iterations, mf_tol
        self.num_chains, self.gibbs_steps = num_chains, gibbs_steps
        self.weight_cost, self.max_norm, self.lr_decay = weight_cost, max_norm, lr_decay
        if joint_lr_scale <= 0:
            raise ConfigError(f"DBM: joint_lr_scale must be positive, got {joint_lr_scale}")
        self.joint_lr_scale = joint_lr_scale
        self.centered, self.offset_rate = centered, offset_rate
        self.sample_steps = sample_steps
        self.dbm = BinaryDBM(self.sizes, weight_std=weight_std, centered=centered)
        self.init_pretraining(weight_std)
        for l, s in enumerate(self.sizes):
            self.register_buffer(f"chains_{l}", torch.zeros(num_chains, s))
        self.register_buffer("chains_ready", torch.tensor(False))
        self.register_buffer("composed", torch.tensor(False))
        self.register_buffer("base_log_odds", torch.zeros(self.data_dim, dtype=torch.float64))
        self.register_buffer("base_ready", torch.tensor(False))
        self.register_buffer("epochs_started", torch.zeros((), dtype=torch.long))  # the recipe's progress
        self._pending_offsets: Optional[list[Tensor]] = None

    # ------------------------------------------------------------------ phases
    @property
    def phase(self) -> int:
        return self.phase_at(self.current_epoch) if self._trainer is not None else self.num_layers

    # ------------------------------------------------------------------ joint training
    def chains(self) -> list[Tensor]:
        """The persistent chains, one ``(num_chains, sizes[l])`` buffer per layer."""
        return [getattr(self, f"chains_{l}") for l in range(self.num_layers + 1)]

    @torch.no_grad()
    def _init_chains(self) -> None:
        v = torch.bernoulli(torch.sigmoid(self.dbm.biases[0]).expand(self.num_chains, -1))
        states = [torch.bernoulli(m) for m in self.dbm.mean_field_init(v)]
        states[0] = v
        for buf, s in zip(self.chains(), states):
            buf.copy_(s)
        self.chains_ready.fill_(True)

    def posterior_means(self, v: Tensor) -> list[Tensor]:
        """``[v, mu_1, ..., mu_L]`` for visibles ``(B, D)``: ``mf_iterations`` rounds at most, stopping below
        ``mf_tol`` (no gradient)."""
        with torch.no_grad():
            return self.dbm.mean_field(v, self.mf_iterations, self.mf_tol)[0]

    def visible_base_log_odds(self) -> Tensor:
        """The training data's log-odds (set at the first epoch)."""
        return self.base_log_odds

    def _joint_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        mus = self.posterior_means(x.reshape(x.shape[0], -1))
        with torch.no_grad():
            v = mus[0]
            recon = torch.sigmoid(self.dbm.layer_input(mus, 0))
            recon_error = (v - recon).pow(2).sum(-1).mean()
            bound_unnorm = self.dbm.mean_field_bound(mus).mean()
        terms: dict[str, Tensor] = {"recon_error": recon_error, "meanfield_unnormalized": bound_unnorm}
        if stage != "train":
            terms["loss"] = recon_error
            return terms
        with torch.no_grad():
            states = self.chains()
            for _ in range(self.gibbs_steps):
                states = self.dbm.gibbs_sweep(states)
            for buf, s in zip(self.chains(), states):
                buf.copy_(s)
        loss = self.dbm.energy(mus).mean() - self.dbm.energy(states).mean()
        if self.weight_cost > 0:
            loss = loss + 0.5 * self.weight_cost * sum(W.pow(2).sum() for W in self.dbm.weights)
        if self.centered:
            self._pending_offsets = [m.mean(0).detach() for m in mus]
        terms["loss"] = loss
        return terms

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        phase = self.phase if stage != "test" else self.num_layers
        x = x.reshape(x.shape[0], -1).to(self.dbm.weights[0].dtype)
        if phase < self.num_layers:
            terms = self._pretrain_terms(x, phase + 1, stage)
        else:
            terms = self._joint_terms(x, stage)
        terms["phase"] = torch.tensor(float(phase))
        if stage == "train":  # epochs already done in the current phase (its progress)
            start = sum(self.epochs_per_layer[:phase])
            terms["epochs_in_phase"] = torch.tensor(float(self.current_epoch - start if self._trainer is not None else 0))
        if stage == "val":
            terms["progress"] = torch.tensor(float(self.current_epoch + 1))
        return terms

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def _data_mean(self) -> Optional[Tensor]:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return None
        total = torch.zeros(self.data_dim, dtype=torch.float64, device=self.device)
        count = 0
        for batch in dm.train_dataloader():
            x = batch_data(batch).reshape(-1, self.data_dim).to(self.device)
            total += x.double().sum(0)
            count += x.shape[0]
        return self.trainer.strategy.broadcast(total / max(count, 1), src=0)

    def on_train_epoch_start(self) -> None:
        self.epochs_started.fill_(self.current_epoch + 1)
        if not bool(self.base_ready):
            mean = self._data_mean()
            if mean is not None:
                self.base_log_odds.copy_(base_rate_log_odds(mean.unsqueeze(0)))
                self.base_ready.fill_(True)
                if self.joint_start > 0:  # the bottom RBM's visible biases start at the data's log-odds
                    with torch.no_grad():
                        self.pre_b[0].copy_(self.base_log_odds.to(self.pre_b[0]))
        if self.phase == self.num_layers:
            if not bool(self.composed):
                if self.joint_start > 0:
                    self.compose()
                    rank_zero_info(f"DBM: composed the {self.num_layers} pretrained RBMs; joint training starts")
                else:
                    with torch.no_grad():
                        self.dbm.biases[0].copy_(self.base_log_odds.to(self.dbm.biases[0]))
                        if self.centered:
                            v_mean = torch.sigmoid(self.base_log_odds).to(self.dbm.biases[0])
                            self.dbm.set_offset(0, v_mean)
                            for l in range(1, self.num_layers + 1):
                                self.dbm.set_offset(l, torch.full_like(self.dbm.offset(l), 0.5))
                    self.composed.fill_(True)
            if not bool(self.chains_ready):
                self._init_chains()
            factor = self.joint_lr_scale / (1.0 + self.lr_decay * (self.current_epoch - self.joint_start))
            for opt in self.trainer.optimizers:
                for group in opt.param_groups:
                    group.setdefault("dbm_initial_lr", group["lr"])
                    group["lr"] = group["dbm_initial_lr"] * factor

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            if self.max_norm is not None:
                for W in [*self.dbm.weights, *self.pre_W]:
                    norms = W.norm(dim=0, keepdim=True).clamp_min(1e-12)
                    W.mul_(torch.clamp(self.max_norm / norms, max=1.0))
            if self._pending_offsets is not None:
                new = [(1 - self.offset_rate) * self.dbm.offset(l) + self.offset_rate * m
                       for l, m in enumerate(self._pending_offsets)]
                new[0] = self.dbm.offset(0)  # the visible offset stays at the data mean
                self.dbm.shift_offsets(new)
                self._pending_offsets = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        if "epochs_started" not in state and "composed" in state:  # a checkpoint written before the buffer
            state["epochs_started"] = torch.tensor(int(checkpoint.get("epoch", -1)) + 1, dtype=torch.long)

    def on_fit_start(self) -> None:
        if self.trainer.max_epochs is not None and 0 < self.trainer.max_epochs <= self.joint_start:
            rank_zero_warn(
                f"DBM: trainer.max_epochs={self.trainer.max_epochs} <= sum(epochs_per_layer)={self.joint_start}: "
                "joint training never starts and the test bound is not that of a trained DBM"
            )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(self, n: int, steps: Optional[int] = None) -> Tensor:
        """Visible probabilities :math:`p(v \\mid h_1)` of the persistent chains (when ``n <= num_chains`` and
        they exist), else of ``steps`` (default ``sample_steps``) odd/even sweeps of fresh chains."""
        if bool(self.chains_ready) and n <= self.num_chains and steps is None:
            states = [c[:n] for c in self.chains()]
        else:
            v = torch.bernoulli(torch.sigmoid(self.dbm.biases[0]).expand(n, -1))
            states = [torch.bernoulli(m) for m in self.dbm.mean_field_init(v)]
            states[0] = v
            for _ in range(steps or self.sample_steps):
                states = self.dbm.gibbs_sweep(states)
        probs = torch.sigmoid(self.dbm.layer_input(states, 0))
        return probs.reshape(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        r"""Mean-field reconstruction :math:`\sigma(b_0 + W_1 \mu_1)`."""
        mus = self.posterior_means(self.visibles(x))
        return torch.sigmoid(self.dbm.layer_input(mus, 0)).reshape(x.shape[0], *self.data_shape)

    # ------------------------------------------------------------------ evaluation
    @property
    def has_test_likelihood(self) -> bool:
        """Whether the fit reached the joint phase (the pretrained RBMs were composed into the DBM), or the DBM was
        built by hand (no epoch run). A fit stopped in pretraining never made a DBM: its random initial weights have
        no test likelihood worth reporting (issue 17), so none is."""
        return bool(self.composed) or int(self.epochs_started) == 0

    @property
    def phase_description(self) -> str:
        started = int(self.epochs_started)
        if started == 0 or bool(self.composed):
            return "joint phase"
        return f"pretraining phase {self.phase_at(started - 1) + 1} of {self.num_layers}: no DBM composed yet"

    @property
    def estimator(self) -> str:
        if not self.has_test_likelihood:
            return f"none ({self.phase_description})"
        return self.meanfield_label

    def summary_fields(self) -> dict[str, Any]:
        """The base's warnings and, when the fit stopped in pretraining, the phase and why no NLL is given."""
        out = super().summary_fields()
        if not self.has_test_likelihood:
            out["phase"] = self.phase_description
            out.setdefault("warnings", []).append(
                f"DBM: the fit stopped in {self.phase_description} (epoch {int(self.epochs_started)} of the recipe's "
                f"{self.joint_start} pretraining epochs); no test NLL is given: fit past sum(epochs_per_layer) for one")
        return out

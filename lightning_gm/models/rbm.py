r"""Restricted Boltzmann machines as LightningModules: :class:`RBM` (binary data) and :class:`GaussianRBM`.

Both wrap the plain-torch maths of :mod:`lightning_gm.nn.rbm` and train by contrastive divergence.
The training loss is the CD surrogate (:meth:`~lightning_gm.nn.rbm.RBMBase.cd_loss`) plus two
penalties from Hinton's practical guide, so that autograd + plain SGD with momentum performs the
classic update:

.. math::

    \mathcal L = \overline{F(v_{\text{data}})} - \overline{F(\operatorname{sg}[v_{\text{model}}])}
      + \tfrac{\lambda_W}{2}\lVert W\rVert^2
      + \lambda_s \sum_j \operatorname{sg}[q_j - p]\; \overline{x_j(v_{\text{data}})},

where :math:`v_{\text{model}}` comes from ``k`` Gibbs sweeps started at the data (CD-k) or from
persistent chains (PCD), :math:`x_j = c_j + s(v)^\top W_{:j}` is hidden unit ``j``'s total input,
:math:`q_j` an exponentially decaying average of its activation probability and :math:`p` the sparsity
target: the gradient of the last term is :math:`\lambda_s (q_j - p)` on :math:`c_j` and
:math:`\lambda_s (q_j - p)\,\overline{s(v)_i}` on :math:`W_{ij}`, the cross-entropy sparsity gradient
of Hinton (2010, section 11). The weight cost applies to ``W`` only (not the biases), as recommended.

Test log-likelihood: :math:`\log p(v) = -F(v) - \log Z` with :math:`\log Z` exact (enumeration of the
smaller layer, when it has at most ``exact_max_units`` units) or estimated by AIS (``ais_runs`` chains,
``ais_steps`` intermediate distributions). The estimate is computed once per set of parameters at
``on_test_start``; the :class:`~lightning_gm.callbacks.ais.AISEvaluation` callback, when configured,
runs the same computation first with a progress bar and writes the per-example free energies.

Persistent chains are the buffer ``chains`` (saved in checkpoints). Under DDP every process keeps
its own chains and its own random stream for them (seeded from the global seed and the rank; the
buffer is excluded from DDP's buffer broadcast); a checkpoint holds every rank's chains
(``checkpoint["pcd_chains_per_rank"]``) and each rank gets its own back on resume with the same
number of processes (otherwise every rank restarts from rank 0's chains).

References:
    Hinton (2002), Training products of experts by minimizing contrastive divergence;
    Tieleman (2008), Training restricted Boltzmann machines using approximations to the likelihood
    gradient (PCD); Hinton (2010), A practical guide to training restricted Boltzmann machines;
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks (AIS);
    Cho, Ilin & Raiko (2011), Improved learning of Gaussian-Bernoulli RBMs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import ProgressFn, ais_log_partition, base_rate_log_odds, summarize_log_weights
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.models.base import GenerativeModel
from lightning_gm.nn.rbm import BernoulliRBM, GaussianBernoulliRBM, RBMBase, with_gradients

__all__ = ["RBM", "GaussianRBM", "LogPartition", "PartitionMixin", "cd_step", "sparsity_penalty"]


def _sgd(params: Any) -> torch.optim.Optimizer:
    # Hinton (2010): learning rate ~0.1 for binary RBMs on mean gradients, momentum 0.9 after a warm-up at 0.5.
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


@dataclass
class LogPartition:
    r"""A log-partition function and how it was obtained.

    Attributes:
        log_z: :math:`\log Z` (exact or :math:`\log \hat Z`).
        estimator: ``"exact"`` or ``"ais"``.
        std_error: delta-method standard error of :math:`\log\hat Z` (0 when exact).
        interval: the :math:`\pm 3\sigma` interval of Salakhutdinov & Murray (2008) (``(log_z, log_z)`` when exact).
        n_runs, n_steps: AIS chains and intermediate distributions (0 when exact).
        effective_sample_size: of the AIS weights (``n_runs`` when exact).
        log_weights: ``(n_runs,)`` float64 AIS log-weights (empty when exact).
    """

    log_z: float
    estimator: str
    std_error: float = 0.0
    interval: tuple[float, float] = (0.0, 0.0)
    n_runs: int = 0
    n_steps: int = 0
    effective_sample_size: float = 0.0
    log_weights: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))


def sparsity_penalty(hidden_logits: Tensor, running_q: Tensor, target: float, cost: float) -> Tensor:
    r"""Surrogate whose gradient is Hinton's sparsity update: :math:`\lambda_s \sum_j \operatorname{sg}[q_j - p]\,\overline{x_j}`.

    Args:
        hidden_logits: :math:`x = c + s(v)^\top W`, ``(N, H)``.
        running_q: :math:`q`, the decaying average of the hidden probabilities, ``(H,)`` (no gradient).
        target: :math:`p`.
        cost: :math:`\lambda_s`.

    Returns:
        Scalar.

    References:
        Hinton (2010), section 11.
    """
    return cost * ((running_q - target).detach() * hidden_logits.mean(0)).sum()


def cd_step(
    rbm: RBMBase,
    v: Tensor,
    k: int,
    chains: Optional[Tensor],
    generator: Optional[torch.Generator],
) -> Tensor:
    r"""Negative samples of one CD-k (``chains is None``) or PCD step (``chains`` updated in place).

    Args:
        rbm: the model.
        v: data batch ``(N, D)`` (CD starts its chains there).
        k: Gibbs sweeps.
        chains: persistent chains ``(M, D)`` or ``None``.
        generator: random stream of the sampler.

    Returns:
        ``(N or M, D)`` negative visibles (no gradient).
    """
    if chains is None:
        return rbm.gibbs_vhv(v, k, generator).v
    new = rbm.gibbs_vhv(chains, k, generator).v
    chains.copy_(new)
    return new


class _Seeded:
    """Context: run a block with the global torch RNG seeded to ``seed``, then restore the outer stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._ctx = torch.random.fork_rng(devices=[])

    def __enter__(self) -> None:
        self._ctx.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


def _first(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class PartitionMixin:
    """Log-partition bookkeeping shared by the RBM-family LightningModules.

    A model using it implements :meth:`_partition_rbm` (the RBM whose :math:`Z` is needed),
    :meth:`_ais_base` (the AIS base model's visible biases) and :meth:`log_prob_unnormalized`, and has
    ``ais_runs``, ``ais_steps``, ``ais_seed`` and ``exact_max_units`` attributes. Then
    ``log_prob(x) = log_prob_unnormalized(x) - log Z`` and :meth:`ensure_log_partition` computes
    :math:`\\log Z` once per set of parameters.

    Under DDP the AIS runs are sharded: every process runs ``ceil(ais_runs / world_size)`` chains with
    its own seed (``ais_seed``, rank), the log-weights are all-gathered and every process summarises the
    same ``ais_runs`` weights, so all ranks hold the same :math:`\\log\\hat Z` and the wall time drops
    with the number of processes.
    """

    ais_runs: int
    ais_steps: int
    ais_seed: int
    exact_max_units: int
    _log_partition: Optional[LogPartition]
    _log_partition_key: Optional[tuple[float, ...]]

    def _partition_rbm(self) -> RBMBase:
        raise NotImplementedError

    def _ais_base(self) -> Optional[Tensor]:
        raise NotImplementedError

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """``log p(x) + log Z`` per example, ``(B,)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ log Z
    def _enumerable(self) -> bool:
        rbm = self._partition_rbm()
        n = min(rbm.n_visible, rbm.n_hidden) if isinstance(rbm, BernoulliRBM) else rbm.n_hidden
        return n <= self.exact_max_units

    @property
    def partition_estimator(self) -> str:
        """``"exact"`` when the smaller layer can be enumerated, else ``"ais"``."""
        return "exact" if self._enumerable() else "ais"

    def _parameter_key(self) -> tuple[float, ...]:
        rbm = self._partition_rbm()
        key: list[float] = []
        for t in list(rbm.parameters()) + list(rbm.buffers()):
            d = t.detach().double()
            key += [float(d.sum()), float(d.pow(2).sum()), float(t.numel())]
        return tuple(key)

    def compute_log_partition(
        self,
        n_runs: Optional[int] = None,
        n_steps: Optional[int] = None,
        progress: Optional[ProgressFn] = None,
        force_ais: bool = False,
        seed: Optional[int] = None,
    ) -> LogPartition:
        r""":math:`\log Z` of :meth:`_partition_rbm`: exact if enumerable (and not ``force_ais``), else AIS.

        Args:
            n_runs: AIS chains (default ``ais_runs``), split over the DDP processes.
            n_steps: intermediate distributions (default ``ais_steps``; 14,500 = the literature schedule).
            progress: ``progress(step, total)`` hook (called by every process; show it on rank 0).
            force_ais: use AIS even when exact enumeration is possible (tests of the estimator).
            seed: AIS seed (default ``ais_seed``); process ``r`` uses ``seed * 1000 + r``.
        """
        rbm = self._partition_rbm()
        if self._enumerable() and not force_ais:
            log_z = log_partition_enumerate(rbm, max_units=self.exact_max_units)
            return LogPartition(log_z, "exact", interval=(log_z, log_z))
        n_runs = int(n_runs or self.ais_runs)
        n_steps = int(n_steps or self.ais_steps)
        trainer = getattr(self, "_trainer", None)
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        local_runs = math.ceil(n_runs / world)
        device = rbm.W.device
        generator = torch.Generator(device=device).manual_seed(int(seed if seed is not None else self.ais_seed) * 1000 + rank)
        local = ais_log_partition(
            rbm, n_runs=local_runs, betas=n_steps, base_visible_bias=self._ais_base(), generator=generator,
            progress=progress,
        )
        log_w = local.log_weights
        if world > 1:
            log_w = self.all_gather(log_w).reshape(-1)  # type: ignore[attr-defined]
        res = summarize_log_weights(log_w[:n_runs].cpu(), local.log_z_base, n_steps=n_steps)
        return LogPartition(
            log_z=res.log_z, estimator="ais", std_error=res.log_z_std_error, interval=res.log_z_interval,
            n_runs=n_runs, n_steps=n_steps, effective_sample_size=res.effective_sample_size, log_weights=res.log_weights,
        )

    def ensure_log_partition(self, progress: Optional[ProgressFn] = None) -> LogPartition:
        """:math:`\\log Z` for the current parameters with the test schedule, computed at most once."""
        key = self._parameter_key()
        if self._log_partition is None or self._log_partition_key != key:
            self._log_partition = self.compute_log_partition(progress=progress)
            self._log_partition_key = key
        return self._log_partition

    @property
    def log_z(self) -> LogPartition:
        """The cached :class:`LogPartition` (computed on first use)."""
        return self.ensure_log_partition()

    def log_prob(self, x: Tensor) -> Tensor:
        return self.log_prob_unnormalized(x) - self.ensure_log_partition().log_z

    def _log_partition_metrics(self) -> dict[str, float]:
        lp = self.ensure_log_partition()
        out = {"logZ": lp.log_z, "logZ_stderr": lp.std_error, "logZ_lower": lp.interval[0], "logZ_upper": lp.interval[1]}
        if lp.estimator == "ais":
            out["ais_ess"] = lp.effective_sample_size
        return out


class _RBMModelBase(PartitionMixin, GenerativeModel):
    """Everything :class:`RBM` and :class:`GaussianRBM` share (see :class:`RBM` for the arguments)."""

    family = "rbm"
    manual_loop = True  # plain "CD loss, backward, SGD step": the base's lean loop (see models/base.py)
    # the CD surrogate's value is logged as train/cd_gap on the logged steps (it is not a likelihood)
    log_train_loss = False
    chains: Tensor
    running_q: Tensor
    chains_ready: Tensor

    def __init__(
        self,
        data_shape: Sequence[int],
        n_hidden: int,
        k: int,
        persistent: bool,
        num_chains: int,
        weight_std: float,
        weight_cost: float,
        sparsity_target: float,
        sparsity_cost: float,
        sparsity_decay: float,
        initial_momentum: float,
        momentum_warmup_epochs: int,
        init_visible_bias: bool,
        monitor_examples: int,
        sample_steps: int,
        ais_runs: int,
        ais_steps: int,
        ais_seed: int,
        exact_max_units: int,
        optimizer: OptimizerCallable,
        lr_scheduler: Optional[LRSchedulerCallable],
    ) -> None:
        super().__init__(data_shape, optimizer, lr_scheduler)
        checks = {
            "n_hidden": (n_hidden >= 1, n_hidden), "k": (k >= 1, k), "num_chains": (num_chains >= 1, num_chains),
            "weight_cost": (weight_cost >= 0, weight_cost), "sparsity_cost": (sparsity_cost >= 0, sparsity_cost),
            "sparsity_target": (0 <= sparsity_target < 1, sparsity_target),
            "sparsity_decay": (0 <= sparsity_decay < 1, sparsity_decay), "ais_runs": (ais_runs >= 1, ais_runs),
            "ais_steps": (ais_steps >= 3, ais_steps), "sample_steps": (sample_steps >= 1, sample_steps),
        }
        for key, (ok, value) in checks.items():
            if not ok:
                raise ConfigError(f"model.init_args.{key}: invalid value {value!r} (see the {type(self).__name__} docstring)")
        self.n_hidden, self.k, self.persistent, self.num_chains = n_hidden, k, persistent, num_chains
        self.weight_cost = weight_cost
        self.sparsity_target, self.sparsity_cost, self.sparsity_decay = sparsity_target, sparsity_cost, sparsity_decay
        self.initial_momentum, self.momentum_warmup_epochs = initial_momentum, momentum_warmup_epochs
        self.init_visible_bias = init_visible_bias
        self.monitor_examples, self.sample_steps = monitor_examples, sample_steps
        self.ais_runs, self.ais_steps, self.ais_seed, self.exact_max_units = ais_runs, ais_steps, ais_seed, exact_max_units
        self.rbm = self._make_rbm(weight_std)
        self.register_buffer("chains", torch.zeros(num_chains if persistent else 0, self.data_dim))
        self.register_buffer("chains_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("running_q", torch.full((n_hidden,), sparsity_target))
        self.register_buffer("ais_base", torch.zeros(self.data_dim))
        # per-process chains: DDP must not overwrite them with rank 0's at every forward
        self._ddp_params_and_buffers_to_ignore = ["chains"]
        self._train_subset: Optional[Tensor] = None
        self._generator: Optional[torch.Generator] = None
        self._pending_generator_state: Optional[Tensor] = None
        self._log_partition = None
        self._log_partition_key = None
        self._closed_form_grads: Optional[tuple[Tensor, ...]] = None
        self.val_free_energy = MeanMetric()

    # ------------------------------------------------------------------ subclass hooks
    def _make_rbm(self, weight_std: float) -> RBMBase:
        raise NotImplementedError

    def to_model_space(self, x: Tensor) -> Tensor:
        """Data ``(B, *data_shape)`` -> visibles ``(B, D)`` the RBM sees."""
        return x.reshape(x.shape[0], -1).to(self.rbm.W.dtype)

    def to_data_space(self, v: Tensor) -> Tensor:
        """Visibles ``(B, D)`` -> data ``(B, *data_shape)``."""
        return v.reshape(v.shape[0], *self.data_shape)

    def _init_from_data(self, mean: Tensor, sq_mean: Tensor) -> None:
        """Fit-start initialisation from the training set's per-unit ``mean`` and ``sq_mean`` (float64)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ PartitionMixin hooks
    def _partition_rbm(self) -> RBMBase:
        return self.rbm

    def _ais_base(self) -> Optional[Tensor]:
        return self.ais_base

    def free_energy(self, x: Tensor) -> Tensor:
        """:math:`F(v)` of data ``x`` (in model space), ``(B,)``."""
        return self.rbm.free_energy(self.to_model_space(x))

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        return -self.free_energy(x)

    @property
    def estimator(self) -> str:
        return self.partition_estimator

    # ------------------------------------------------------------------ randomness of the chains
    @property
    def generator(self) -> torch.Generator:
        """This process's random stream for the Gibbs chains (seeded from the global seed and the rank)."""
        if self._generator is None:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            self._generator = torch.Generator(device=self.device)
            if self._pending_generator_state is not None:
                self._generator.set_state(self._pending_generator_state)
                self._pending_generator_state = None
            else:
                self._generator.manual_seed((torch.initial_seed() * 1_000_003 + 7919 * (rank + 1)) % (2**63))
        return self._generator

    # ------------------------------------------------------------------ data at fit start
    def _training_data(self) -> Optional[Iterable[Any]]:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_dataloader"):
            rank_zero_warn(f"{type(self).__name__}: no DataModule, so no visible-bias initialisation or train subset")
            return None
        return dm.train_dataloader()

    def _data_moments(self, loader: Iterable[Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, mean square (per visible) of the whole training set and a fixed subset of it."""
        total = torch.zeros(self.data_dim, dtype=torch.float64)
        total_sq = torch.zeros(self.data_dim, dtype=torch.float64)
        count, subset = 0, []
        kept = 0
        for batch in loader:
            x = _first(batch).reshape(_first(batch).shape[0], -1).double()
            total += x.sum(0)
            total_sq += x.pow(2).sum(0)
            count += x.shape[0]
            if kept < self.monitor_examples:
                subset.append(x[: self.monitor_examples - kept].float())
                kept += subset[-1].shape[0]
        if count == 0:
            raise ConfigError("the training set is empty: nothing to initialise the RBM from")
        sub = torch.cat(subset) if subset else torch.zeros(0, self.data_dim)
        return total / count, total_sq / count, sub

    def setup(self, stage: str) -> None:
        """At fit start: visible biases (and the AIS base) from the training data, and the fixed training
        subset of the free-energy gap. Runs on every DDP process before the model is wrapped, over the
        whole (un-sharded) training set with a fixed seed, so every process computes the same values
        (and DDP then broadcasts rank 0's parameters anyway). Skipped for the biases when resuming."""
        if stage != "fit":
            return
        loader = self._training_data()
        if loader is None:
            return
        with _Seeded(12345):  # fixed draws (dynamic binarisation, shuffling); the outer stream is untouched
            mean, sq_mean, subset = self._data_moments(loader)
        self._train_subset = subset
        if self.trainer.ckpt_path is None:
            self._init_from_data(mean, sq_mean)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        """Momentum warm-up (Hinton 2010, section 9): ``initial_momentum`` for the first
        ``momentum_warmup_epochs`` epochs, then the optimiser's configured momentum."""
        if self.momentum_warmup_epochs <= 0:
            return
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                if "momentum" not in group:
                    continue
                group.setdefault("final_momentum", group["momentum"])
                warm = self.current_epoch < self.momentum_warmup_epochs
                group["momentum"] = self.initial_momentum if warm else group["final_momentum"]

    def _negative(self, v: Tensor, data_logits: Optional[Tensor] = None) -> Tensor:
        if not self.persistent:  # CD-k: the chain starts at the data, from the hidden input already computed
            return self.rbm.gibbs_vhv(v, self.k, self.generator, hidden_logits=data_logits).v
        if not bool(self.chains_ready):
            with torch.no_grad():  # start the chains at the model's visible marginals with h = 0
                h0 = torch.zeros(self.num_chains, self.n_hidden, device=self.device, dtype=self.rbm.W.dtype)
                self.chains.copy_(self.rbm.sample_visibles(h0, generator=self.generator))
                self.chains_ready.fill_(True)
        return cd_step(self.rbm, v, self.k, self.chains, self.generator)

    def _monitor_terms(self, v: Tensor) -> dict[str, Tensor]:
        return {}

    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        v = self.to_model_space(x)
        terms: dict[str, Tensor] = {}
        if stage != "train":
            terms["recon_error"] = self.rbm.reconstruction_error(v)
            fe = self.rbm.free_energy(v)
            if stage == "val":
                self.val_free_energy.update(fe.detach())
            return {"loss": fe.mean(), "free_energy": fe.mean(), **terms, **self._monitor_terms(v)}
        # The fused CD step: the data's hidden input x = c + s(v)'W is computed once and serves the data term
        # of the loss, the start of the CD chain, the sparsity signal and the reconstruction monitor, so an
        # update costs the 5 matrix products of a hand-written CD-1. For the binary RBM the gradients are
        # written out (cd_loss_closed_form: no autograd graph); other RBMs differentiate the CD surrogate.
        closed_form = type(self.rbm) is BernoulliRBM  # gradients written out; other RBMs: autograd
        with torch.set_grad_enabled(not closed_form):
            logits = self.rbm.hidden_logits(v)
        v_model = self._negative(v, logits)
        if self.is_logging_step():  # the training monitor costs a matrix product: only on the logged steps
            with torch.no_grad():
                terms["recon_error"] = self.rbm.reconstruction_error(v, hidden_probs=torch.sigmoid(logits))
        signal = None
        if self.sparsity_cost > 0:
            with torch.no_grad():
                q = torch.sigmoid(logits).mean(0)
                self.running_q.mul_(self.sparsity_decay).add_((1 - self.sparsity_decay) * q)
                signal = self.running_q - self.sparsity_target
            terms["hidden_activity"] = q.mean()
        if closed_form:
            assert isinstance(self.rbm, BernoulliRBM)
            logged = self.is_logging_step()
            value, grads = self.rbm.cd_gradients(v, v_model, logits, self.weight_cost,
                                                 None if signal is None else (signal, self.sparsity_cost),
                                                 compute_value=logged)
            # in a one-process fit _backward hands the gradients to .grad: the loss needs no autograd carrier
            fitting_alone = self._trainer is not None and self._single_process()
            loss = value if fitting_alone else with_gradients(value, (self.rbm.W, self.rbm.b, self.rbm.c), grads)
            self._closed_form_grads = grads
            if logged:
                terms["cd_gap"] = value
        else:
            loss = self.rbm.cd_loss(v, v_model, data_logits=logits)
            if self.weight_cost > 0:
                loss = loss + 0.5 * self.weight_cost * self.rbm.W.pow(2).sum()
            if self.sparsity_cost > 0:
                loss = loss + sparsity_penalty(logits, self.running_q, self.sparsity_target, self.sparsity_cost)
            terms["cd_gap"] = loss.detach()
        terms["loss"] = loss
        return terms

    def _single_process(self) -> bool:
        return self._trainer is None or self.trainer.world_size == 1

    def _backward(self, loss: Tensor) -> None:
        """Closed-form CD gradients go straight into ``.grad`` in a single process (no autograd pass); under
        DDP ``manual_backward`` runs, so that DDP all-reduces them."""
        grads, self._closed_form_grads = self._closed_form_grads, None
        if grads is None or not self._single_process():
            return super()._backward(loss)
        for param, grad in zip((self.rbm.W, self.rbm.b, self.rbm.c), grads):
            param.grad = grad if param.grad is None else param.grad + grad

    def on_validation_epoch_end(self) -> None:
        """``val/free_energy_gap``: mean free energy of the validation data minus that of a fixed
        training subset. It grows when the model starts to overfit (Hinton 2010, section 6)."""
        if self.val_free_energy.update_called:
            val_fe = self.val_free_energy.compute()
            self.val_free_energy.reset()
            if self._train_subset is not None and len(self._train_subset):
                with torch.no_grad():
                    train_fe = self.free_energy(self._train_subset.to(self.device)).mean()
                self.log("val/free_energy_gap", (val_fe - train_fe).float(), sync_dist=False)
                self.log("val/free_energy_train_subset", train_fe.float(), sync_dist=False)

    # ------------------------------------------------------------------ test
    def on_test_start(self) -> None:
        self.ensure_log_partition()

    def on_test_epoch_end(self) -> None:
        lp = self.ensure_log_partition()
        for key, value in self._log_partition_metrics().items():
            self.log(f"test/{key}", float(value), sync_dist=False)
        if self.test_nll.update_called:
            nll = float(self.test_nll.compute()[0])
            # nll = mean F + log Z: the log Z interval moves the NLL one for one
            self.log("test/nll_lower", nll + lp.interval[0] - lp.log_z, sync_dist=False)
            self.log("test/nll_upper", nll + lp.interval[1] - lp.log_z, sync_dist=False)
        super().on_test_epoch_end()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every process's chains and chain random stream (collective under DDP: Lightning calls
        this hook on every rank and writes rank 0's dictionary)."""
        state = self.generator.get_state().to(torch.int64)
        chains = self.chains
        if self._trainer is not None and self.trainer.world_size > 1:
            chains = self.all_gather(chains)
            state = self.all_gather(state)
        else:
            chains, state = chains.unsqueeze(0), state.unsqueeze(0)
        checkpoint["pcd_chains_per_rank"] = chains.detach().cpu()
        checkpoint["chain_rng_per_rank"] = state.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rank = self.trainer.global_rank if self._trainer is not None else 0
        world = self.trainer.world_size if self._trainer is not None else 1
        per_rank = checkpoint.get("pcd_chains_per_rank")
        if per_rank is not None and per_rank.shape[0] == world and "chains" in checkpoint.get("state_dict", {}):
            checkpoint["state_dict"]["chains"] = per_rank[rank].clone()
        states = checkpoint.get("chain_rng_per_rank")
        if states is not None and states.shape[0] == world:
            self._pending_generator_state = states[rank].to(torch.uint8).clone()
            self._generator = None
        self._log_partition = None

    # ------------------------------------------------------------------ sampling and pictures
    @torch.no_grad()
    def gibbs_samples(self, n: int, steps: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` visibles after ``steps`` Gibbs sweeps from the model's visible marginals at ``h = 0``:
        the conditional mean of the last sweep (model space), ``(n, D)``."""
        h0 = torch.zeros(n, self.n_hidden, device=self.device, dtype=self.rbm.W.dtype)
        v = self.rbm.sample_visibles(h0, generator=generator)
        return self.rbm.gibbs_vhv(v, steps or self.sample_steps, generator).v_mean

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.to_data_space(self.gibbs_samples(n))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """One mean-field up-down pass, in data space."""
        v = self.to_model_space(x)
        return self.to_data_space(self.rbm.mean_visibles(self.rbm.mean_hiddens(v))).reshape(x.shape)

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """Extra pictures for :class:`~lightning_gm.callbacks.rbm.RBMPictures`, ``name -> (N, D)`` in data space
        scaled to [0, 1]: ``filters`` (columns of ``W``, one per hidden unit, each min-max scaled) and
        ``fantasy`` (the persistent chains' conditional means, PCD only)."""
        w = self.rbm.W.detach().T[: max(n, 100)]
        lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        out = {"filters": ((w - lo) / (hi - lo).clamp_min(1e-12)).float().cpu()}
        if self.persistent and bool(self.chains_ready):
            v = self.rbm.mean_visibles(self.rbm.mean_hiddens(self.chains[:n]))
            out["fantasy"] = self._display(v)
        return out

    def _display(self, v: Tensor) -> Tensor:
        return self.to_data_space(v).reshape(v.shape[0], -1).clamp(0, 1).float().cpu()


class RBM(_RBMModelBase):
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
        data_shape: shape of one example (linked from the data); ``D`` visible units.
        n_hidden: hidden units ``H``.
        k: Gibbs sweeps per update (CD-k, or PCD-k).
        persistent: PCD (Tieleman 2008) when true, CD-k from the data when false.
        num_chains: persistent chains per process (PCD); usually the batch size.
        weight_std: standard deviation of the initial weights (Hinton: 0.01).
        weight_cost: L2 cost :math:`\lambda_W` on ``W`` only (Hinton: 1e-4 .. 1e-2 times the learning rate scale; 2e-4 here).
        sparsity_target: target mean activation :math:`p` of every hidden unit.
        sparsity_cost: :math:`\lambda_s` (0 = no sparsity penalty).
        sparsity_decay: decay of the running estimate :math:`q` (Hinton: 0.9 .. 0.99).
        initial_momentum: momentum of the first ``momentum_warmup_epochs`` epochs (Hinton: 0.5), after
            which the optimiser's own momentum applies (0 epochs = always the optimiser's).
        momentum_warmup_epochs: see ``initial_momentum``.
        init_visible_bias: set :math:`b_i = \log p_i/(1-p_i)` from the training data at fit start.
        monitor_examples: size of the fixed training subset for ``val/free_energy_gap``.
        sample_steps: Gibbs sweeps behind :meth:`sample` (pictures).
        ais_runs: AIS chains at test (the literature: 100).
        ais_steps: AIS intermediate distributions at test (the literature: 14,500).
        ais_seed: seed of the AIS chains (reproducible test numbers).
        exact_max_units: enumerate the smaller layer for the exact :math:`\log Z` when it has at most this
            many units (estimator ``exact``); otherwise AIS.
        update_batch_size: examples per CD update when it is smaller than the data's batch size: each loaded
            batch is split into consecutive updates of this size (the same updates as loading them one by one;
            Lightning's per-step cost is paid once per loaded batch). ``None``: one update per loaded batch.
        optimizer: optimiser factory (default SGD, lr 0.1, momentum 0.9).
        lr_scheduler: optional scheduler factory.

    References:
        Hinton (2002); Tieleman (2008); Hinton (2010), A practical guide to training RBMs;
        Salakhutdinov & Murray (2008).
    """

    monitor = "val/pll"
    monitor_mode = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        n_hidden: int = 500,
        k: int = 1,
        persistent: bool = True,
        num_chains: int = 100,
        weight_std: float = 0.01,
        weight_cost: float = 2e-4,
        sparsity_target: float = 0.1,
        sparsity_cost: float = 0.0,
        sparsity_decay: float = 0.95,
        initial_momentum: float = 0.5,
        momentum_warmup_epochs: int = 5,
        init_visible_bias: bool = True,
        monitor_examples: int = 1000,
        sample_steps: int = 1000,
        ais_runs: int = 100,
        ais_steps: int = 14500,
        ais_seed: int = 0,
        exact_max_units: int = 20,
        update_batch_size: Optional[int] = None,
        optimizer: OptimizerCallable = _sgd,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(
            data_shape, n_hidden, k, persistent, num_chains, weight_std, weight_cost, sparsity_target,
            sparsity_cost, sparsity_decay, initial_momentum, momentum_warmup_epochs, init_visible_bias,
            monitor_examples, sample_steps, ais_runs, ais_steps, ais_seed, exact_max_units, optimizer, lr_scheduler,
        )
        self.set_update_batch_size(update_batch_size)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])

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


class GaussianRBM(_RBMModelBase):
    r"""Gaussian-Bernoulli RBM (family ``rbm``) for real-valued data, trained by CD-k or PCD.

    .. math::

        E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_{ij} \frac{v_i}{\sigma_i^2} W_{ij} h_j - c^\top h

    (Cho et al. 2011). With ``standardize`` the model sees :math:`v = (x - \mu) / s` with the per-unit
    training mean :math:`\mu` and standard deviation :math:`s` (clamped below at ``min_std``), stored as
    buffers, and the change of variables gives the density of the data itself:

    .. math:: \log p(x) = -F(v) - \log Z - \sum_i \log s_i.

    Args:
        data_shape: shape of one example (linked from the data).
        n_hidden: hidden units.
        sigma: initial (or fixed) visible standard deviation in model space (1 for standardised data).
        learn_sigma: learn :math:`\log\sigma` too.
        standardize: standardise the data per unit inside the model (statistics from the training set at
            fit start).
        min_std: lower clamp of the data standard deviations (constant pixels).
        k, persistent, num_chains, weight_std, weight_cost, sparsity_target, sparsity_cost, sparsity_decay,
        initial_momentum, momentum_warmup_epochs, monitor_examples, sample_steps, ais_runs, ais_steps, ais_seed,
        exact_max_units, update_batch_size, optimizer, lr_scheduler: as :class:`RBM` (Hinton: a learning rate one or two orders of
        magnitude smaller than for binary units).
        init_visible_bias: set :math:`b` to the (standardised) data mean at fit start; the AIS base is a
            Gaussian at that mean with the model's :math:`\sigma`.

    References:
        Cho, Ilin & Raiko (2011); Hinton (2010), section 13.2; Salakhutdinov & Murray (2008).
    """

    monitor = "val/recon_error"
    monitor_mode = "min"
    data_mean: Tensor
    data_std: Tensor

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        n_hidden: int = 500,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        standardize: bool = True,
        min_std: float = 0.01,
        k: int = 1,
        persistent: bool = False,
        num_chains: int = 100,
        weight_std: float = 0.01,
        weight_cost: float = 2e-4,
        sparsity_target: float = 0.1,
        sparsity_cost: float = 0.0,
        sparsity_decay: float = 0.95,
        initial_momentum: float = 0.5,
        momentum_warmup_epochs: int = 5,
        init_visible_bias: bool = True,
        monitor_examples: int = 1000,
        sample_steps: int = 1000,
        ais_runs: int = 100,
        ais_steps: int = 14500,
        ais_seed: int = 0,
        exact_max_units: int = 20,
        update_batch_size: Optional[int] = None,
        optimizer: OptimizerCallable = _sgd,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        if sigma <= 0 or min_std <= 0:
            raise ConfigError(f"model.init_args.sigma and min_std must be > 0, got {sigma} and {min_std}")
        self.sigma0, self.learn_sigma, self.standardize, self.min_std = sigma, learn_sigma, standardize, min_std
        super().__init__(
            data_shape, n_hidden, k, persistent, num_chains, weight_std, weight_cost, sparsity_target,
            sparsity_cost, sparsity_decay, initial_momentum, momentum_warmup_epochs, init_visible_bias,
            monitor_examples, sample_steps, ais_runs, ais_steps, ais_seed, exact_max_units, optimizer, lr_scheduler,
        )
        self.set_update_batch_size(update_batch_size)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.register_buffer("data_mean", torch.zeros(self.data_dim))
        self.register_buffer("data_std", torch.ones(self.data_dim))

    def _make_rbm(self, weight_std: float) -> RBMBase:
        return GaussianBernoulliRBM(self.data_dim, self.n_hidden, sigma=self.sigma0, learn_sigma=self.learn_sigma,
                                    weight_std=weight_std)

    def to_model_space(self, x: Tensor) -> Tensor:
        v = x.reshape(x.shape[0], -1).to(self.rbm.W.dtype)
        return (v - self.data_mean) / self.data_std if self.standardize else v

    def to_data_space(self, v: Tensor) -> Tensor:
        x = v * self.data_std + self.data_mean if self.standardize else v
        return x.reshape(v.shape[0], *self.data_shape)

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

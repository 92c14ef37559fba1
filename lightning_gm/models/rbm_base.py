r"""The base of the RBM-family LightningModules (:class:`~lightning_gm.models.rbm.RBM`,
:class:`~lightning_gm.models.rbm.GaussianRBM`, the subspace and spike-and-slab RBMs): :class:`RBMModelBase`.

They wrap the plain-torch maths of :mod:`lightning_gm.nn.rbm` and train by contrastive divergence.
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
smaller layer, when it has at most ``ais.exact_max_units`` units) or estimated by AIS (``ais.runs`` chains,
``ais.steps`` intermediate distributions), through the shared
:class:`~lightning_gm.models.energy.PartitionMixin` (computed once per set of parameters at ``on_test_start``,
with a progress bar; the :class:`~lightning_gm.callbacks.ais.AISEvaluation` callback, when configured, also
writes the per-example free energies).

The knobs several RBM-family models share come as parameter groups: ``cd``
(:class:`~lightning_gm.nn.rbm.CD`: ``k``, ``persistent``, ``chains``), ``penalties``
(:class:`~lightning_gm.nn.rbm.Penalties`: weight cost and sparsity) and ``ais``
(:class:`~lightning_gm.estimators.ais.AISSchedule`); in a config::

    model:
      class_path: lightning_gm.models.RBM
      init_args:
        cd: {k: 1, persistent: true, chains: 100}
        ais: {runs: 100, steps: 14500}

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

import inspect
from typing import Any, Iterable, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule, AnnealingPath
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.estimators.rbm_ais import RBMAnnealingPath
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
    sgd_binary_rbm,
)
from lightning_gm.models.manual_loop import ClipAlgorithm, ManualLoop
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.models.momentum import FLAT_MOMENTUM_KEYS, MomentumWarmup
from lightning_gm.nn.rbm import CD, BernoulliRBM, Penalties, RBMBase, with_gradients

__all__ = ["RBMModelBase", "cd_step", "sparsity_penalty"]


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


class RBMModelBase(GroupedHyperparameters, ManualLoop, ChainStream, PartitionMixin, GenerativeModel):
    """Everything the RBM-family LightningModules share (:class:`RBM`, :class:`GaussianRBM`, the subspace and the
    spike-and-slab RBM). A subclass takes its own arguments plus ``**kwargs`` and passes them on by keyword;
    it implements ``_make_rbm``, ``_init_from_data`` and the :class:`~lightning_gm.models.energy.PartitionMixin`
    hooks.

    Args:
        data_shape: shape of one example (linked from the data); ``D`` visible units.
        n_hidden: hidden units ``H``.
        cd: contrastive divergence (:class:`~lightning_gm.nn.rbm.CD`: sweeps ``k``, ``persistent`` chains, their number).
        penalties: weight cost and sparsity (:class:`~lightning_gm.nn.rbm.Penalties`).
        weight_std: standard deviation of the initial weights (Hinton: 0.01).
        momentum: the warm-up (:class:`~lightning_gm.models.momentum.MomentumWarmup`): momentum ``initial``
            (Hinton: 0.5) for the first ``epochs`` epochs, then the optimiser's own (0 epochs = always the optimiser's).
        init_visible_bias: set the visible biases from the training data at fit start (the binary RBM:
            :math:`b_i = \\log p_i/(1-p_i)`).
        monitor_examples: size of the fixed training subset for ``val/free_energy_gap``.
        sample_steps: Gibbs sweeps behind :meth:`sample` (pictures).
        ais: the test :math:`\\log Z` (:class:`~lightning_gm.estimators.ais.AISSchedule`: runs, steps, seed, exact limit).
        update_batch_size, gradient_clip_val, gradient_clip_algorithm: the manual loop's (see
            :class:`~lightning_gm.models.manual_loop.ManualLoop`): examples per CD update when smaller than the
            loaded batch (``None``: one update per batch), gradient clipping of every update (``None``: none).
        optimizer: optimiser factory (default SGD, lr 0.1, momentum 0.9).
        lr_scheduler: optional scheduler factory.
    """

    family = "rbm"
    groups = ("cd", "penalties", "momentum", "ais")
    #: checkpoints and run configs written before the groups still load
    flat_keys = {**FLAT_CD_KEYS, **FLAT_PENALTY_KEYS, **FLAT_MOMENTUM_KEYS, **FLAT_AIS_KEYS}
    introduced = ManualLoop.introduced  # (GroupedHyperparameters' empty table would hide the loop's)
    # the CD surrogate's value is logged as train/cd_gap on the logged steps (it is not a likelihood)
    log_train_loss = False
    chains: Tensor
    running_q: Tensor
    chains_ready: Tensor

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        n_hidden: int = 500,
        cd: CD = CD(),
        penalties: Penalties = Penalties(),
        weight_std: float = 0.01,
        momentum: MomentumWarmup = MomentumWarmup(),
        init_visible_bias: bool = True,
        monitor_examples: int = 1000,
        sample_steps: int = 1000,
        ais: AISSchedule = AISSchedule(),
        update_batch_size: Optional[int] = None,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: ClipAlgorithm = "norm",
        optimizer: OptimizerCallable = sgd_binary_rbm,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(data_shape, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], frame=inspect.currentframe())
        groups = {"cd": CD.coerce(cd), "penalties": Penalties.coerce(penalties),
                  "momentum": MomentumWarmup.coerce(momentum), "ais": AISSchedule.coerce(ais)}
        for key, (ok, value) in {"n_hidden": (n_hidden >= 1, n_hidden), "sample_steps": (sample_steps >= 1, sample_steps)}.items():
            if not ok:
                raise ConfigError(f"model.init_args.{key}: invalid value {value!r} (see the {type(self).__name__} docstring)")
        self.cd: CD = groups["cd"]  # type: ignore[assignment]
        self.penalties: Penalties = groups["penalties"]  # type: ignore[assignment]
        self.ais = groups["ais"]  # type: ignore[assignment]
        self.n_hidden = n_hidden
        self.momentum: MomentumWarmup = groups["momentum"]  # type: ignore[assignment]
        self.init_visible_bias = init_visible_bias
        self.monitor_examples, self.sample_steps = monitor_examples, sample_steps
        self.init_manual_loop(update_batch_size, gradient_clip_val, gradient_clip_algorithm)
        self.rbm = self._make_rbm(weight_std)
        self.register_buffer("chains", torch.zeros(self.cd.chains if self.cd.persistent else 0, self.data_dim))
        self.register_buffer("chains_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("running_q", torch.full((n_hidden,), self.penalties.sparsity_target))
        self.register_buffer("ais_base", torch.zeros(self.data_dim))
        # per-process chains: DDP must not overwrite them with rank 0's at every forward
        self._ddp_params_and_buffers_to_ignore = ["chains"]
        self._train_subset: Optional[Tensor] = None
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
    def annealing_path(self) -> AnnealingPath:
        """Salakhutdinov & Murray's path from the base-rate model (``ais_base``, the data's log-odds) to the RBM."""
        return RBMAnnealingPath(self.rbm, self.ais_base)  # type: ignore[arg-type]

    def exact_log_partition(self) -> Optional[float]:
        """Enumerate the smaller layer (the hidden one for real-valued visibles) when it has at most
        ``ais.exact_max_units`` units."""
        rbm = self.rbm
        n = min(rbm.n_visible, rbm.n_hidden) if isinstance(rbm, BernoulliRBM) else rbm.n_hidden
        if n > self.ais.exact_max_units:
            return None
        return log_partition_enumerate(rbm, max_units=self.ais.exact_max_units)

    def free_energy(self, x: Tensor) -> Tensor:
        """:math:`F(v)` of data ``x`` (in model space), ``(B,)``."""
        return self.rbm.free_energy(self.to_model_space(x))

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        return -self.free_energy(x)

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
            x = batch_data(batch).reshape(batch_data(batch).shape[0], -1).double()
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
        with seeded_rng(12345):  # fixed draws (dynamic binarisation, shuffling); the outer stream is untouched
            mean, sq_mean, subset = self._data_moments(loader)
        self._train_subset = subset
        if self.trainer.ckpt_path is None:
            self._init_from_data(mean, sq_mean)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        """Momentum warm-up (:class:`~lightning_gm.models.momentum.MomentumWarmup`), from the fit's first epoch."""
        self.momentum.apply(self.trainer.optimizers, self.current_epoch)

    def _negative(self, v: Tensor, data_logits: Optional[Tensor] = None) -> Tensor:
        if not self.cd.persistent:  # CD-k: the chain starts at the data, from the hidden input already computed
            return self.rbm.gibbs_vhv(v, self.cd.k, self.generator, hidden_logits=data_logits).v
        if not bool(self.chains_ready):
            with torch.no_grad():  # start the chains at the model's visible marginals with h = 0
                h0 = torch.zeros(self.cd.chains, self.n_hidden, device=self.device, dtype=self.rbm.W.dtype)
                self.chains.copy_(self.rbm.sample_visibles(h0, generator=self.generator))
                self.chains_ready.fill_(True)
        return cd_step(self.rbm, v, self.cd.k, self.chains, self.generator)

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
        pen = self.penalties
        if pen.sparsity_cost > 0:
            with torch.no_grad():
                q = torch.sigmoid(logits).mean(0)
                self.running_q.mul_(pen.sparsity_decay).add_((1 - pen.sparsity_decay) * q)
                signal = self.running_q - pen.sparsity_target
            terms["hidden_activity"] = q.mean()
        if closed_form:
            assert isinstance(self.rbm, BernoulliRBM)
            logged = self.is_logging_step()
            value, grads = self.rbm.cd_gradients(v, v_model, logits, pen.weight_cost,
                                                 None if signal is None else (signal, pen.sparsity_cost),
                                                 compute_value=logged)
            # in a one-process fit _backward hands the gradients to .grad: the loss needs no autograd carrier
            fitting_alone = self._trainer is not None and self._single_process()
            loss = value if fitting_alone else with_gradients(value, (self.rbm.W, self.rbm.b, self.rbm.c), grads)
            self._closed_form_grads = grads
            if logged:
                terms["cd_gap"] = value
        else:
            loss = self.rbm.cd_loss(v, v_model, data_logits=logits)
            if pen.weight_cost > 0:
                loss = loss + 0.5 * pen.weight_cost * self.rbm.W.pow(2).sum()
            if pen.sparsity_cost > 0:
                loss = loss + sparsity_penalty(logits, self.running_q, pen.sparsity_target, pen.sparsity_cost)
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

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every process's chains (collective under DDP) beside the chain random stream (``ChainStream``)."""
        super().on_save_checkpoint(checkpoint)
        chains = self.chains
        if self._trainer is not None and self.trainer.world_size > 1:
            chains = self.all_gather(chains)
        else:
            chains = chains.unsqueeze(0)
        checkpoint["pcd_chains_per_rank"] = chains.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        rank = self.trainer.global_rank if self._trainer is not None else 0
        world = self.trainer.world_size if self._trainer is not None else 1
        per_rank = checkpoint.get("pcd_chains_per_rank")
        if per_rank is not None and per_rank.shape[0] == world and "chains" in checkpoint.get("state_dict", {}):
            checkpoint["state_dict"]["chains"] = per_rank[rank].clone()

    # ------------------------------------------------------------------ sampling and pictures
    @torch.no_grad()
    def gibbs_samples(self, n: int, steps: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` visibles after ``steps`` Gibbs sweeps from the model's visible marginals at ``h = 0``:
        the conditional mean of the last sweep (model space), ``(n, D)``."""
        v = self.rbm.sample_visibles(self.zero_hidden(n), generator=generator)
        return self.rbm.gibbs_vhv(v, steps or self.sample_steps, generator).v_mean

    def zero_hidden(self, n: int) -> Tensor:
        """The all-off hidden state of ``n`` chains (sampling starts at the visible marginals there)."""
        return torch.zeros(n, self.n_hidden, device=self.device, dtype=self.rbm.W.dtype)

    def hidden_means(self, v: Tensor) -> Tensor:
        """The hidden means given visibles ``(B, D)`` that a mean-field up-down pass sends back down."""
        return self.rbm.mean_hiddens(v)

    def filter_rows(self) -> Tensor:
        """The filters, one row of ``D`` weights each (the columns of ``W``), no gradient."""
        return self.rbm.W.detach().T

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.to_data_space(self.gibbs_samples(n))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """One mean-field up-down pass, in data space."""
        v = self.to_model_space(x)
        return self.to_data_space(self.rbm.mean_visibles(self.hidden_means(v))).reshape(x.shape)

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """Extra pictures for :class:`~lightning_gm.callbacks.rbm.RBMPictures`, ``name -> (N, D)`` in data space
        scaled to [0, 1]: ``filters`` (columns of ``W``, one per hidden unit, each min-max scaled) and
        ``fantasy`` (the persistent chains' conditional means, PCD only)."""
        out = {"filters": scale_rows(self.filter_rows()[: max(n, 100)])}
        if self.cd.persistent and bool(self.chains_ready):
            out["fantasy"] = self._display(self.rbm.mean_visibles(self.hidden_means(self.chains[:n])))
        return out

    def _display(self, v: Tensor) -> Tensor:
        return self.to_data_space(v).reshape(v.shape[0], -1).clamp(0, 1).float().cpu()

r"""The subspace RBM (Tomczak & Gonczarek 2017) as a LightningModule, on the RBM machinery.

:class:`SubspaceRBM` reuses :class:`~lightning_gm.models.rbm._RBMModelBase` (CD-k/PCD with persistent chains
in checkpoints, weight cost, sparsity on the gates, momentum warm-up, data initialisation, free-energy gap,
test :math:`\log Z` and its interval) with the maths of :class:`~lightning_gm.nn.subspace_rbm.SubspaceRBMNet`.
:class:`VariantPartitionMixin` replaces the Bernoulli-RBM-specific parts of
:class:`~lightning_gm.models.rbm.PartitionMixin` by two hooks, an exact :math:`\log Z` and an
:class:`~lightning_gm.estimators.ais.AnnealingPath`, keeping its DDP sharding of the AIS runs.

.. math::

    \log p(x) = b^\top x + \sum_j \operatorname{logaddexp}\Big(K\log 2,\ c_j + \sum_k
        \operatorname{softplus}\big(A_{jk} + \textstyle\sum_i W_{ijk} x_i\big)\Big) - \log Z.

References:
    Tomczak & Gonczarek (2017), Learning invariant features using subspace restricted Boltzmann machine;
    Tieleman (2008); Salakhutdinov & Murray (2008).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AnnealingPath, ProgressFn, base_rate_log_odds, run_ais, as_beta_list, summarize_log_weights
from lightning_gm.estimators.rbm_variants import SubspaceRBMAnnealingPath, subspace_rbm_log_partition_enumerate
from lightning_gm.models.rbm import LogPartition, _RBMModelBase, _sgd, cd_step
from lightning_gm.nn.subspace_rbm import SubspaceRBMNet

__all__ = ["SubspaceRBM", "VariantPartitionMixin"]


class VariantPartitionMixin:
    """:math:`\\log Z` for RBM variants: exact through :meth:`_exact_log_partition` when :meth:`_enumerable`,
    else forward AIS along :meth:`_annealing_path` (runs split over DDP processes, log-weights all-gathered,
    as in :class:`~lightning_gm.models.rbm.PartitionMixin`). Put it before ``_RBMModelBase`` in the bases."""

    ais_runs: int
    ais_steps: int
    ais_seed: int
    exact_max_units: int

    def _enumerable(self) -> bool:
        raise NotImplementedError

    def _exact_log_partition(self) -> float:
        raise NotImplementedError

    def _annealing_path(self) -> AnnealingPath[Tensor]:
        raise NotImplementedError

    def compute_log_partition(
        self,
        n_runs: Optional[int] = None,
        n_steps: Optional[int] = None,
        progress: Optional[ProgressFn] = None,
        force_ais: bool = False,
        seed: Optional[int] = None,
    ) -> LogPartition:
        """See :meth:`lightning_gm.models.rbm.PartitionMixin.compute_log_partition`."""
        if self._enumerable() and not force_ais:
            log_z = self._exact_log_partition()
            return LogPartition(log_z, "exact", interval=(log_z, log_z))
        n_runs = int(n_runs or self.ais_runs)
        n_steps = int(n_steps or self.ais_steps)
        trainer = getattr(self, "_trainer", None)
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        path = self._annealing_path()  # float64 copies on the model's device
        generator = torch.Generator(device=self.rbm.W.device).manual_seed(int(seed if seed is not None else self.ais_seed) * 1000 + rank)
        betas = as_beta_list(n_steps)
        log_w = run_ais(path, betas, path.sample_base(math.ceil(n_runs / world), generator), generator, progress)
        if world > 1:
            log_w = self.all_gather(log_w).reshape(-1)  # type: ignore[attr-defined]
        res = summarize_log_weights(log_w[:n_runs].cpu(), path.log_z_base(), n_steps=n_steps)
        return LogPartition(
            log_z=res.log_z, estimator="ais", std_error=res.log_z_std_error, interval=res.log_z_interval,
            n_runs=n_runs, n_steps=n_steps, effective_sample_size=res.effective_sample_size, log_weights=res.log_weights,
        )


class SubspaceRBM(VariantPartitionMixin, _RBMModelBase):
    r"""Subspace RBM (family ``rbm``) on binary data, trained by CD-k or PCD.

    .. math::

        E(x, h, S) = -\sum_{ijk} W_{ijk} x_i h_j S_{jk} - b^\top x - c^\top h - \sum_{jk} A_{jk} h_j S_{jk}

    with ``n_hidden`` gates :math:`h` and ``subspace_size`` subspace units per gate; parameters
    :math:`DMK + D + M + MK`. Gibbs sampling draws the gates with the subspace summed out, then the subspace
    units given the gates, then the visibles (:class:`~lightning_gm.nn.subspace_rbm.SubspaceRBMNet`). The
    sparsity penalty, when used, acts on the gates' log-odds. Test: :math:`\log Z` exact by enumeration when
    :math:`\min(D, M(K+1)) \le` ``exact_max_units``, else AIS from the data's base-rate model
    (:class:`~lightning_gm.estimators.rbm_variants.SubspaceRBMAnnealingPath`). Pictures (with
    :class:`~lightning_gm.callbacks.RBMPictures`): ``filters`` are the ``K`` filters :math:`W_{:jk}` of each
    gate one after the other (with ``K`` dividing 10, every grid row holds whole subspaces), and ``fantasy``.

    Args:
        data_shape: shape of one example (linked from the data), ``D`` visibles.
        n_hidden: gate units ``M``.
        subspace_size: subspace units per gate ``K``.
        k, persistent, num_chains, weight_std, weight_cost, sparsity_target, sparsity_cost, sparsity_decay,
        initial_momentum, momentum_warmup_epochs, init_visible_bias, monitor_examples, sample_steps, ais_runs,
        ais_steps, ais_seed, optimizer, lr_scheduler: as :class:`~lightning_gm.models.RBM`.
        exact_max_units: exact :math:`\log Z` when the smaller side (``D`` visibles or ``M(K+1)`` gate and
            subspace units) has at most this many binary units.

    References:
        Tomczak & Gonczarek (2017); Hinton (2002); Tieleman (2008); Salakhutdinov & Murray (2008).
    """

    monitor = "val/pll"
    monitor_mode = "max"

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        n_hidden: int = 100,
        subspace_size: int = 5,
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
        optimizer: OptimizerCallable = _sgd,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        if subspace_size < 1:
            raise ConfigError(f"model.init_args.subspace_size: must be >= 1, got {subspace_size!r}")
        self.subspace_size = subspace_size
        super().__init__(
            data_shape, n_hidden, k, persistent, num_chains, weight_std, weight_cost, sparsity_target,
            sparsity_cost, sparsity_decay, initial_momentum, momentum_warmup_epochs, init_visible_bias,
            monitor_examples, sample_steps, ais_runs, ais_steps, ais_seed, exact_max_units, optimizer, lr_scheduler,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])

    rbm: SubspaceRBMNet  # type: ignore[assignment]

    def _make_rbm(self, weight_std: float) -> SubspaceRBMNet:  # type: ignore[override]
        return SubspaceRBMNet(self.data_dim, self.n_hidden, self.subspace_size, weight_std=weight_std)

    # ------------------------------------------------------------------ log Z
    def _enumerable(self) -> bool:
        return min(self.data_dim, self.n_hidden * (self.subspace_size + 1)) <= self.exact_max_units

    def _exact_log_partition(self) -> float:
        return subspace_rbm_log_partition_enumerate(self.rbm, max_units=max(self.exact_max_units, 1))

    def _annealing_path(self) -> AnnealingPath[Tensor]:
        return SubspaceRBMAnnealingPath(self.rbm, self.ais_base)

    # ------------------------------------------------------------------ data and training
    def _init_from_data(self, mean: Tensor, sq_mean: Tensor) -> None:
        with torch.no_grad():
            log_odds = base_rate_log_odds(mean.unsqueeze(0))
            if self.init_visible_bias:
                self.rbm.b.copy_(log_odds.to(self.rbm.b))
            self.ais_base.copy_(log_odds.to(self.ais_base))

    def _monitor_terms(self, v: Tensor) -> dict[str, Tensor]:
        return {"pll": self.rbm.pseudo_log_likelihood(v).mean()}

    def _negative(self, v: Tensor, data_logits: Optional[Tensor] = None) -> Tensor:
        if not self.persistent:
            return cd_step(self.rbm, v, self.k, None, self.generator)  # type: ignore[arg-type]
        if not bool(self.chains_ready):
            with torch.no_grad():  # chains start at the visible marginals with every gate off
                self.chains.copy_(self.rbm.sample_visibles(self.rbm.zero_hidden(self.num_chains), generator=self.generator))
                self.chains_ready.fill_(True)
        return cd_step(self.rbm, v, self.k, self.chains, self.generator)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ sampling and pictures
    @torch.no_grad()
    def gibbs_samples(self, n: int, steps: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` visibles after ``steps`` Gibbs sweeps from the gates-off visible marginals (conditional means), ``(n, D)``."""
        v = self.rbm.sample_visibles(self.rbm.zero_hidden(n), generator=generator)
        return self.rbm.gibbs_vhv(v, steps or self.sample_steps, generator).v_mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """One mean-field up-down pass, in data space."""
        v = self.to_model_space(x)
        return self.to_data_space(self.rbm.mean_visibles(self.rbm.mean_z(v))).reshape(x.shape)

    @torch.no_grad()
    def pictures(self, n: int = 64) -> dict[str, Tensor]:
        """``filters``: :math:`W_{:jk}` for the first gates, the ``K`` filters of each gate consecutive, each
        min-max scaled, ``(M K, D)`` (at most ``max(n, 100)`` rows); ``fantasy``: the persistent chains' means."""
        w = self.rbm.W.detach().permute(1, 2, 0).reshape(-1, self.data_dim)[: max(n, 100)]
        lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        out = {"filters": ((w - lo) / (hi - lo).clamp_min(1e-12)).float().cpu()}
        if self.persistent and bool(self.chains_ready):
            out["fantasy"] = self._display(self.rbm.mean_visibles(self.rbm.mean_z(self.chains[:n])))
        return out

r"""What the energy-based families share: one home for :math:`\log Z`, the chains' random stream, defaults.

:class:`PartitionMixin` is the one implementation of "exact :math:`\log Z` if enumerable, else AIS; computed
once per set of parameters; logged at test" for every energy model (RBM, GaussianRBM, SubspaceRBM,
SpikeSlabRBM, DBN, ConvRBM, DBM, MPDBM). A model implements two hooks,

* :meth:`PartitionMixin.annealing_path`: an :class:`~lightning_gm.estimators.ais.AnnealingPath` from a
  tractable base to the model (or to the part of it whose :math:`Z` is needed, e.g. a DBN's top RBM), and
* :meth:`PartitionMixin.exact_log_partition`: the exact :math:`\log Z` by enumeration, or ``None`` when the
  model is too large (``ais.exact_max_units``),

and :meth:`PartitionMixin.log_prob_unnormalized` (:math:`\log p(x) + \log Z`: :math:`-F(v)` for an RBM, a
bound for a DBN or DBM); the mixin does the rest:

.. math:: \log p(x) = \texttt{log\_prob\_unnormalized}(x) - \log\hat Z .

AIS runs the model's :class:`~lightning_gm.estimators.ais.AISSchedule` (``ais.runs`` chains x ``ais.steps``
steps) through the one entry point :func:`~lightning_gm.estimators.ais.ais_log_partition`. Under DDP the runs
are split: process ``r`` runs ``ceil(runs / world)`` chains from :func:`~lightning_gm.nn.rbm.chain_generator`
``(ais.seed, r)``, the log-weights are all-gathered and every process summarises the same ``runs`` weights.
At test it logs (names shared with the rest of the platform) ``test/logZ``, ``test/logZ_stderr``,
``test/logZ_lower``, ``test/logZ_upper`` and, for AIS, ``test/ais_ess``, ``test/ais_runs``, ``test/ais_steps``,
plus ``test/nll_lower`` and ``test/nll_upper`` (the NLL moves one for one with :math:`\log Z`).

References:
    Salakhutdinov & Murray (2008), On the quantitative analysis of deep belief networks, ICML;
    Neal (2001), Annealed importance sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from torch import Tensor

from lightning_gm.estimators.ais import AISResult, AISSchedule, AnnealingPath, ProgressFn, ais_log_partition, summarize_log_weights
from lightning_gm.estimators.reverse import ReverseStart
from lightning_gm.nn.rbm import chain_generator
from lightning_gm.progress import trainer_progress

__all__ = [
    "LogPartition",
    "PartitionMixin",
    "ChainStream",
    "StandardizedVisibles",
    "FLAT_AIS_KEYS",
    "FLAT_CD_KEYS",
    "FLAT_PENALTY_KEYS",
    "batch_data",
    "scale_rows",
    "seeded_rng",
    "sgd_binary_rbm",
    "sgd_real_rbm",
    "sgd_conv_rbm",
    "sgd_dbm",
]


# ---------------------------------------------------------------------------------------- defaults and small helpers
def _sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def sgd_binary_rbm(params: Any) -> torch.optim.Optimizer:
    """SGD, lr 0.1, momentum 0.9: Hinton (2010) for binary RBMs on mean gradients (RBM, GaussianRBM, DBN, subspace RBM)."""
    return _sgd(params, 0.1)


def sgd_real_rbm(params: Any) -> torch.optim.Optimizer:
    """SGD, lr 1e-3, momentum 0.9: real-valued units want a rate two orders of magnitude smaller (Hinton 2010, 13.2)."""
    return _sgd(params, 1e-3)


def sgd_conv_rbm(params: Any) -> torch.optim.Optimizer:
    """SGD, lr 0.01, momentum 0.9 (convolutional RBMs, per-position averaged gradients as in Lee et al.'s code)."""
    return _sgd(params, 0.01)


def sgd_dbm(params: Any) -> torch.optim.Optimizer:
    """SGD, lr 0.05, momentum 0.9: Salakhutdinov's DBM code on mean gradients."""
    return _sgd(params, 0.05)


def batch_data(batch: Any) -> Tensor:
    """The data tensor of a batch (``x`` or ``(x, y, ...)``)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def scale_rows(x: Tensor) -> Tensor:
    """Min-max scale every row of ``(N, D)`` to [0, 1], on the CPU (pictures of filters and maps)."""
    x = x.detach()
    lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).float().cpu()


class seeded_rng:  # noqa: N801 - a context manager used like a function
    """Context: run a block with the global torch RNG seeded to ``seed``, then restore the outer stream
    (fixed draws, e.g. dynamic binarisation while reading the training set at fit start)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._ctx = torch.random.fork_rng(devices=[])

    def __enter__(self) -> None:
        self._ctx.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


class ChainStream:
    """The random stream of a model's Gibbs chains: one generator per process, seeded from the global seed and
    the rank by :func:`~lightning_gm.nn.rbm.chain_generator`; a state restored from a checkpoint (set
    ``_pending_generator_state``) replaces the seed."""

    _generator: Optional[torch.Generator] = None
    _pending_generator_state: Optional[Tensor] = None

    @property
    def generator(self) -> torch.Generator:
        """This process's random stream for the Gibbs chains."""
        if self._generator is None:
            trainer = getattr(self, "_trainer", None)
            rank = trainer.global_rank if trainer is not None else 0
            self._generator = chain_generator(torch.initial_seed(), rank, self.device)  # type: ignore[attr-defined]
            if self._pending_generator_state is not None:
                self._generator.set_state(self._pending_generator_state)
                self._pending_generator_state = None
        return self._generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every process's chain random stream as ``chain_rng_per_rank`` (collective under DDP: Lightning
        calls this hook on every rank and writes rank 0's dictionary), so that a resumed fit and a loaded model
        draw what the saved one would have drawn next."""
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        state = self.generator.get_state().to(torch.int64)
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            state = self.all_gather(state)  # type: ignore[attr-defined]
        else:
            state = state.unsqueeze(0)
        checkpoint["chain_rng_per_rank"] = state.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore this process's stream from ``chain_rng_per_rank`` (when written by as many processes)."""
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        trainer = getattr(self, "_trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        states = checkpoint.get("chain_rng_per_rank")
        if states is not None and states.shape[0] == world:
            self._pending_generator_state = states[rank].to(torch.uint8).clone()
            self._generator = None


class StandardizedVisibles:
    """Mixin of an RBM-family model on real-valued data standardised per unit inside the model (buffers
    ``data_mean``, ``data_std`` set from the training data; ``standardize`` off: the identity):
    :math:`v = (x - \mu) / \sigma`."""

    standardize: bool
    data_mean: Tensor
    data_std: Tensor

    def to_model_space(self, x: Tensor) -> Tensor:
        """Data ``(B, *data_shape)`` -> standardised visibles ``(B, D)``."""
        v = x.reshape(x.shape[0], -1).to(self.rbm.W.dtype)  # type: ignore[attr-defined]
        return (v - self.data_mean) / self.data_std if self.standardize else v

    def to_data_space(self, v: Tensor) -> Tensor:
        """Visibles ``(B, D)`` -> data ``(B, *data_shape)`` (the standardisation undone)."""
        x = v * self.data_std + self.data_mean if self.standardize else v
        return x.reshape(v.shape[0], *self.data_shape)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- old checkpoints
#: flat keys of checkpoints written before the parameter groups, and where they live now
FLAT_AIS_KEYS = {"ais_runs": ("ais", "runs"), "ais_steps": ("ais", "steps"), "ais_seed": ("ais", "seed"),
                 "exact_max_units": ("ais", "exact_max_units")}
FLAT_CD_KEYS = {"k": ("cd", "k"), "persistent": ("cd", "persistent"), "num_chains": ("cd", "chains")}
FLAT_PENALTY_KEYS = {name: ("penalties", name) for name in ("weight_cost", "sparsity_target", "sparsity_cost",
                                                           "sparsity_decay")}


# ---------------------------------------------------------------------------------------- log Z
@dataclass(frozen=True)
class LogPartition:
    r"""A log-partition function and how it was obtained.

    Attributes:
        log_z: :math:`\log Z` (exact or :math:`\log \hat Z`).
        estimator: ``"exact"`` or ``"ais"``.
        ais: the AIS result (``None`` when exact).
    """

    log_z: float
    estimator: str
    ais: Optional[AISResult] = None
    _empty: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64), repr=False)

    @classmethod
    def exact(cls, log_z: float) -> "LogPartition":
        return cls(float(log_z), "exact")

    @classmethod
    def from_ais(cls, result: AISResult) -> "LogPartition":
        return cls(result.log_z, "ais", result)

    @property
    def stderr(self) -> float:
        """Standard error of :math:`\\log\\hat Z` (0 when exact)."""
        return self.ais.log_z_stderr if self.ais is not None else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """The :math:`\\pm 3\\sigma` interval of :math:`\\log Z` (``(log_z, log_z)`` when exact)."""
        return self.ais.log_z_interval if self.ais is not None else (self.log_z, self.log_z)

    @property
    def runs(self) -> int:
        return self.ais.runs if self.ais is not None else 0

    @property
    def steps(self) -> int:
        return self.ais.steps if self.ais is not None else 0

    @property
    def effective_sample_size(self) -> float:
        return self.ais.effective_sample_size if self.ais is not None else 0.0

    @property
    def log_weights(self) -> Tensor:
        return self.ais.log_weights if self.ais is not None else self._empty

    def metrics(self) -> dict[str, float]:
        """The test metrics of this :math:`\\log Z` (without the ``test/`` prefix)."""
        lower, upper = self.interval
        out = {"logZ": self.log_z, "logZ_stderr": self.stderr, "logZ_lower": lower, "logZ_upper": upper}
        if self.ais is not None:
            out.update(ais_ess=self.effective_sample_size, ais_runs=float(self.runs), ais_steps=float(self.steps))
        return out


class PartitionMixin:
    """:math:`\\log Z` bookkeeping of every energy model (module docstring). Put it before the LightningModule
    base in the bases; the model has an ``ais`` :class:`~lightning_gm.estimators.ais.AISSchedule`."""

    ais: AISSchedule
    _log_partition: Optional[LogPartition] = None
    _log_partition_key: Optional[tuple[Any, ...]] = None

    # ------------------------------------------------------------------ the hooks a model implements
    def annealing_path(self) -> AnnealingPath:
        """The AIS path from a tractable base to the distribution whose :math:`Z` is needed (detached copies)."""
        raise NotImplementedError

    def exact_log_partition(self) -> Optional[float]:
        """The exact :math:`\\log Z` by enumeration, or ``None`` when more than ``ais.exact_max_units`` units
        would have to be enumerated."""
        return None

    def log_prob_unnormalized(self, x: Tensor) -> Tensor:
        """:math:`\\log p(x) + \\log Z` per example, ``(B,)``."""
        raise NotImplementedError

    def reverse_annealing_start(self, x: Tensor, chains: int, generator: Optional[torch.Generator] = None) -> ReverseStart:
        """Where reverse annealing from the data (RAISE, :mod:`lightning_gm.estimators.reverse`) starts for examples
        ``x``: ``chains`` copies of each. The default is for a path whose state is the data in model space
        (``to_model_space``; the RBM family, the convolutional RBM), its numerator the model's
        :meth:`log_prob_unnormalized` (which includes any change of variables of the data); a model whose path
        keeps latent layers (DBM) or whose likelihood is a bound around a top RBM (DBN) overrides it."""
        state = self.to_model_space(x)  # type: ignore[attr-defined]
        states = state.repeat(chains, *([1] * (state.dim() - 1)))
        numerator = self.log_prob_unnormalized(x).detach().to(torch.float64).repeat(chains)
        return ReverseStart(self.annealing_path(), states, numerator, x.shape[0])

    # ------------------------------------------------------------------ the machinery
    def _partition_tensors(self) -> Iterator[Tensor]:
        # everything that can change Z; the persistent chains never do (and move during training)
        yield from self.parameters()  # type: ignore[attr-defined]
        for name, buf in self.named_buffers():  # type: ignore[attr-defined]
            if "chains" not in name:
                yield buf

    def _partition_key(self) -> tuple[Any, ...]:
        # the schedule too: changing ais (e.g. exact_max_units) must not return a value computed under another
        key: list[Any] = [self.ais]
        for t in self._partition_tensors():
            d = t.detach().double()
            key += [float(d.sum()), float(d.pow(2).sum()), float(t.numel())]
        return tuple(key)

    def _cached_log_partition(self) -> Optional[LogPartition]:
        if self._log_partition is not None and self._log_partition_key == self._partition_key():
            return self._log_partition
        return None

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "_trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def compute_log_partition(
        self,
        runs: Optional[int] = None,
        steps: Optional[int] = None,
        progress: Optional[ProgressFn] = None,
        force_ais: bool = False,
        seed: Optional[int] = None,
    ) -> LogPartition:
        r""":math:`\log Z`: exact if enumerable (and not ``force_ais``), else forward AIS (not cached).

        Args:
            runs: AIS chains (default ``ais.runs``), split over the DDP processes.
            steps: annealing steps (default ``ais.steps``).
            progress: ``progress(step, total)`` hook (default: a bar of :mod:`lightning_gm.progress` when a
                trainer is attached, which also stops the loop on SIGTERM).
            force_ais: use AIS even when exact enumeration is possible (tests of the estimator).
            seed: AIS seed (default ``ais.seed``).
        """
        if not force_ais:
            exact = self.exact_log_partition()
            if exact is not None:
                return LogPartition.exact(exact)
        runs, steps = int(runs or self.ais.runs), int(steps or self.ais.steps)
        seed = self.ais.seed if seed is None else int(seed)
        world, rank = self._world()
        device = self.device  # type: ignore[attr-defined]
        trainer = getattr(self, "_trainer", None)
        bar = None
        if progress is None and trainer is not None:
            bar = progress = trainer_progress(trainer, f"AIS log Z ({runs} runs x {steps:,} betas)", unit="beta")
        try:
            local = ais_log_partition(self.annealing_path(), math.ceil(runs / world), steps,
                                      generator=chain_generator(seed, rank, device), progress=progress)
        finally:
            if bar is not None:
                bar.close()
        log_w = local.log_weights
        if world > 1:
            log_w = self.all_gather(log_w.to(device)).reshape(-1)  # type: ignore[attr-defined]
        return LogPartition.from_ais(summarize_log_weights(log_w[:runs].cpu(), local.log_z_base, steps=steps))

    def ensure_log_partition(self, progress: Optional[ProgressFn] = None) -> LogPartition:
        """:math:`\\log Z` for the current parameters with the model's schedule, computed at most once."""
        cached = self._cached_log_partition()
        if cached is None:
            key = self._partition_key()
            cached = self.compute_log_partition(progress=progress)
            self._log_partition, self._log_partition_key = cached, key
        return cached

    @property
    def log_z(self) -> LogPartition:
        """The cached :class:`LogPartition` (computed on first use)."""
        return self.ensure_log_partition()

    @property
    def partition_estimator(self) -> str:
        """``"exact"`` when the model is small enough to enumerate, else ``"ais"`` (never runs AIS to say so)."""
        cached = self._cached_log_partition()
        if cached is not None:
            return cached.estimator
        exact = self.exact_log_partition()
        if exact is None:
            return "ais"
        self._log_partition, self._log_partition_key = LogPartition.exact(exact), self._partition_key()
        return "exact"

    def partition_label(self, exact: str = "exact", ais: str = "ais") -> str:
        """The estimator label: ``exact`` (or ``ais``, with the schedule when it is not 100 x 14,500:
        ``ais 100x1,000``)."""
        if self.partition_estimator == "exact":
            return exact
        return ais if self.ais.is_full else f"{ais} {self.ais.runs:,}x{self.ais.steps:,}"

    @property
    def estimator(self) -> str:
        return self.partition_label()

    def log_prob(self, x: Tensor) -> Tensor:
        """:math:`\\log p(x)` (or the family's bound of it) ``= log_prob_unnormalized(x) - log Z``, ``(B,)``."""
        return self.log_prob_unnormalized(x) - self.ensure_log_partition().log_z

    def log_partition_metrics(self) -> dict[str, float]:
        """``logZ``, its error and interval, the AIS ESS and schedule, and the matching NLL interval when the
        test NLL has been accumulated (without the ``test/`` prefix)."""
        lp = self.ensure_log_partition()
        out = lp.metrics()
        test_nll = getattr(self, "test_nll", None)
        if test_nll is not None and test_nll.update_called:
            nll = float(test_nll.compute()[0])
            # nll = mean of -log_prob_unnormalized + log Z: the log Z interval moves the NLL one for one
            out["nll_lower"] = nll + lp.interval[0] - lp.log_z
            out["nll_upper"] = nll + lp.interval[1] - lp.log_z
        return out

    def summary_fields(self) -> dict[str, Any]:
        """What ``summary.json`` must say beside the numbers: warnings when the AIS estimate of :math:`\\log Z` is
        poor (ESS under 10% of the runs, an interval wider than 1 nat)."""
        lp = self._cached_log_partition()
        if lp is None or lp.ais is None:
            return {}
        warnings = []
        if lp.effective_sample_size < 0.1 * lp.runs:
            warnings.append(f"AIS ESS {lp.effective_sample_size:.1f} of {lp.runs} runs (under 10%)")
        width = lp.interval[1] - lp.interval[0]
        if width > 1.0:
            warnings.append(f"AIS log Z interval {width:.2f} nats wide (+-3 s.e. {lp.stderr:.2f}; over 1 nat)")
        return {"warnings": warnings} if warnings else {}

    @property
    def has_test_likelihood(self) -> bool:
        """Whether the model, as trained, defines the test likelihood its recipe promises (a phased recipe stopped
        early may not: then the test logs its other metrics, no ``test/nll``, and ``summary_fields`` says why)."""
        return True

    # ------------------------------------------------------------------ Lightning hooks
    def on_test_start(self) -> None:
        if self.has_test_likelihood:
            self.ensure_log_partition()
        super().on_test_start()  # type: ignore[misc]

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        if self.has_test_likelihood:
            return super().test_step(batch, batch_idx)  # type: ignore[misc]
        self._common_step(batch, "test")  # type: ignore[attr-defined]
        return None

    def on_test_epoch_end(self) -> None:
        if not self.has_test_likelihood:
            return
        for key, value in self.log_partition_metrics().items():
            self.log(f"test/{key}", float(value), sync_dist=False)  # type: ignore[attr-defined]
        super().on_test_epoch_end()  # type: ignore[misc]

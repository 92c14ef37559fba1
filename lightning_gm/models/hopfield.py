r"""The Hopfield network as a LightningModule (:class:`Hopfield`): store patterns in one pass, test retrieval.

Training is storage, not optimisation: the first ``num_patterns`` training examples (binarised, as spins
:math:`\xi = 2x - 1`; with ``balanced_classes`` one class after the other) are kept, and at the end of the pass
the Hebbian couplings :math:`W = \frac1N\sum_\mu \xi^\mu\xi^{\mu\top}` (zero diagonal,
:class:`~lightning_gm.nn.hopfield.HopfieldNetwork`) are set. There is no optimiser (manual optimisation, none
configured) and the epoch stops as soon as the patterns are stored.

The Hopfield network is *not* a density model with a tractable :math:`\log p` (its Boltzmann distribution at
zero temperature is the set of attractors), so no ``test/nll`` is logged. Validation and test measure
retrieval (the protocol is the ``retrieval_test`` group, :class:`RetrievalTest`): every stored pattern is corrupted
``cue_repeats`` times by flipping each bit with probability ``cue_noise``, the dynamics (``update`` = ``async`` or
``sync``) run until convergence, and

* ``{stage}/retrieval_rate``: fraction of cues whose final state has overlap
  :math:`m = s^\top\xi/N \ge` ``overlap`` with their own pattern (the checkpoint monitor);
* ``{stage}/bit_error`` and ``{stage}/cue_bit_error``: fraction of wrong bits after and before the dynamics;
* ``{stage}/overlap``: mean final overlap; ``{stage}/fixed_points``: fraction of stored patterns that are fixed points;
* ``{stage}/energy_cue`` and ``{stage}/energy_final``: mean :math:`E = -\tfrac12 s^\top W s` before and after
  (the full per-sweep curve is drawn by :class:`~lightning_gm.callbacks.hopfield.HopfieldPictures`);
* ``{stage}/sweeps`` and ``{stage}/converged`` (fraction of chains at a fixed point; a synchronous 2-cycle is not).

References:
    Hopfield (1982); Amit, Gutfreund & Sompolinsky (1985); MacKay (2003), chapter 42.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.groups import ParameterGroup
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.migration import GroupedHyperparameters
from lightning_gm.nn.hopfield import HopfieldNetwork, HopfieldRun, UpdateMode, corrupt, overlap, to_spins

__all__ = ["Hopfield", "RetrievalTest"]


@dataclass(frozen=True)
class RetrievalTest(ParameterGroup):
    """How validation and test measure retrieval: the cues, and when a final state counts as retrieved.

    Args:
        cue_noise: probability of flipping each bit of a cue, in [0, 0.5].
        cue_repeats: corrupted cues per stored pattern, >= 1.
        overlap: overlap :math:`m = s^\\top\\xi/N` from which a final state counts as the retrieved pattern, in [-1, 1].
        seed: seed of the cue corruption and update orders (the same cues every evaluation).

    References:
        Amit, Gutfreund & Sompolinsky (1985) (retrieval at overlap close to 1 below capacity).
    """

    key: ClassVar[str] = "model.init_args.retrieval_test"
    cue_noise: float = 0.1
    cue_repeats: int = 10
    overlap: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        self.require("cue_noise", 0.0 <= self.cue_noise <= 0.5, "in [0, 0.5] (a flip probability)")
        self.require("cue_repeats", self.cue_repeats >= 1, ">= 1")
        self.require("overlap", -1.0 <= self.overlap <= 1.0, "in [-1, 1]")


class Hopfield(GroupedHyperparameters, GenerativeModel):
    r"""Hopfield network with Hebbian storage of training patterns and retrieval from corrupted cues.

    .. math:: W = \frac1N\sum_{\mu=1}^{P}\xi^\mu\xi^{\mu\top},\ W_{ii} = 0, \qquad E(s) = -\tfrac12 s^\top W s,
              \qquad s_i \leftarrow \operatorname{sgn}\Big(\sum_j W_{ij} s_j\Big).

    Args:
        data_shape: shape of one example (linked from the data); :math:`N` = its size. Data in [0, 1] is
            thresholded at 0.5 into spins.
        num_patterns: :math:`P`, the number of training examples stored.
        balanced_classes: store the classes in turn (the pattern ``i`` has label ``i mod num_classes`` when the
            labels allow it) instead of the first ``num_patterns`` examples.
        num_classes: number of labels for ``balanced_classes``.
        update: ``async`` (random-order single-unit updates; the energy never rises) or ``sync``.
        max_sweeps: sweep limit of the dynamics.
        retrieval_test: the validation/test protocol (:class:`RetrievalTest`: ``cue_noise``, ``cue_repeats``,
            ``overlap``, ``seed``).

    Storage is not optimisation: there is no optimiser to configure.

    References:
        Hopfield (1982); Amit, Gutfreund & Sompolinsky (1985).
    """

    family = "hopfield"
    groups = ("retrieval_test",)
    #: the flat keys of checkpoints written before the group, and where they live now
    flat_keys = {"cue_noise": ("retrieval_test", "cue_noise"), "cue_repeats": ("retrieval_test", "cue_repeats"),
                 "retrieval_overlap": ("retrieval_test", "overlap"), "eval_seed": ("retrieval_test", "seed")}
    monitor = "val/retrieval_rate"
    monitor_mode = "max"
    patterns: Tensor
    labels: Tensor
    n_stored: Tensor

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        num_patterns: int = 5,
        balanced_classes: bool = True,
        num_classes: int = 10,
        update: UpdateMode = "async",
        max_sweeps: int = 50,
        retrieval_test: RetrievalTest = RetrievalTest(),
    ) -> None:
        super().__init__(data_shape)
        self.save_hyperparameters()
        for key, value in (("num_patterns", num_patterns), ("max_sweeps", max_sweeps), ("num_classes", num_classes)):
            if value < 1:
                raise ConfigError(f"model.init_args.{key} must be >= 1, got {value}")
        if update not in ("async", "sync"):
            raise ConfigError(f"model.init_args.update must be 'async' or 'sync', got {update!r}")
        self.automatic_optimization = False
        self.net = HopfieldNetwork(self.data_dim)
        self.num_patterns, self.balanced_classes, self.num_classes = num_patterns, balanced_classes, num_classes
        self.update, self.max_sweeps = update, max_sweeps
        self.retrieval_test = RetrievalTest.coerce(retrieval_test)
        self.register_buffer("patterns", torch.zeros(num_patterns, self.data_dim))
        self.register_buffer("labels", torch.full((num_patterns,), -1, dtype=torch.long))
        self.register_buffer("n_stored", torch.tensor(0))
        #: the last evaluation's cues, targets and :class:`HopfieldRun` (for pictures)
        self.last_retrieval: Optional[tuple[Tensor, Tensor, HopfieldRun]] = None

    # ------------------------------------------------------------------ storage
    @property
    def load(self) -> float:
        r""":math:`\alpha = P / N`."""
        return self.num_patterns / self.data_dim

    def configure_optimizers(self) -> Any:
        return None

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 0:
            self.n_stored.zero_()
            self.labels.fill_(-1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        return -1 if int(self.n_stored) >= self.num_patterns else None  # -1: the rest of the epoch is skipped

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else (batch, None)
        s = to_spins(x).to(self.patterns)
        for i in range(s.shape[0]):
            n = int(self.n_stored)
            if n >= self.num_patterns:
                break
            if self.balanced_classes and y is not None and int(y[i]) != n % self.num_classes:
                continue
            self.patterns[n] = s[i]
            self.labels[n] = -1 if y is None else int(y[i])
            self.n_stored.add_(1)
        self.log("train/stored_patterns", self.n_stored.float(), on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        if int(self.n_stored) < self.num_patterns:
            raise ConfigError(
                f"Hopfield: only {int(self.n_stored)} of model.init_args.num_patterns={self.num_patterns} patterns "
                f"found in the training set (balanced_classes={self.balanced_classes}): lower num_patterns or "
                f"set balanced_classes=false")
        self.net.store(self.patterns)
        self.log("train/load", self.load, on_epoch=True)

    # ------------------------------------------------------------------ retrieval
    @torch.no_grad()
    def retrieval(self, noise: Optional[float] = None, repeats: Optional[int] = None) -> dict[str, Tensor]:
        """Corrupt every stored pattern ``repeats`` times (default ``retrieval_test.cue_repeats``, with
        ``retrieval_test.cue_noise``), run the dynamics, return the metrics (see module docstring)."""
        test = self.retrieval_test
        g = torch.Generator(device=self.device).manual_seed(test.seed)
        targets = self.patterns.repeat_interleave(repeats or test.cue_repeats, 0)
        cues = corrupt(targets, test.cue_noise if noise is None else noise, g).to(self.patterns)
        run = self.net.run(cues, self.update, self.max_sweeps, g)
        self.last_retrieval = (cues, targets, run)
        m = overlap(run.state, targets)
        fixed = (self.net.sync_step(self.patterns) == self.patterns).all(-1).float().mean()
        return {
            "retrieval_rate": (m >= test.overlap).float().mean(),
            "bit_error": (run.state != targets).float().mean(),
            "cue_bit_error": (cues != targets).float().mean(),
            "overlap": m.mean(),
            "fixed_points": fixed,
            "energy_cue": run.energies[0].mean(),
            "energy_final": run.energies[-1].mean(),
            "sweeps": torch.tensor(float(run.sweeps)),
            "converged": run.converged.float().mean(),
            "load": torch.tensor(self.load),
        }

    def _evaluate(self, batch_idx: int, stage: str) -> None:
        if batch_idx != 0:  # the cues are the stored patterns: evaluated once per epoch
            return
        metrics = self.retrieval()
        self.log_dict({f"{stage}/{k}": v.float() for k, v in metrics.items()}, on_epoch=True, batch_size=1)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        """No ``test/nll``: the Hopfield network has no tractable likelihood."""

    # ------------------------------------------------------------------ not a density model
    @property
    def estimator(self) -> str:
        """Not a density model: its test reports retrieval metrics (see :attr:`GenerativeModel.estimator`)."""
        return "none (retrieval metrics)"

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError("Hopfield is not a density model: it logs retrieval metrics, no log-likelihood")

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Attractors reached from ``n`` random states (stored patterns, their negatives or spurious mixtures), in [0, 1]."""
        g = torch.Generator(device=self.device).manual_seed(self.retrieval_test.seed + 1)
        s0 = torch.where(torch.rand(n, self.data_dim, generator=g, device=self.device) < 0.5, -1.0, 1.0)
        return ((self.net.run(s0, self.update, self.max_sweeps, g).state + 1) / 2).reshape(n, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The attractor reached from each (binarised) example, in [0, 1]."""
        g = torch.Generator(device=self.device).manual_seed(self.retrieval_test.seed)
        s = self.net.run(to_spins(x).to(self.patterns), self.update, self.max_sweeps, g).state
        return ((s + 1) / 2).reshape(x.shape)

r"""Learning-rate schedules written over the run's *progress*, so that a budget compresses a recipe instead of
cutting it (plain torch: ``torch.optim.lr_scheduler.LRScheduler`` subclasses, usable from a config as
``model.init_args.lr_scheduler``).

A paper's schedule is laid out in epochs (Burda et al.: 3^i epochs at each of 8 learning rates, 3,280 epochs).
Cut by a wall-clock budget it would never leave its first phases; here every schedule is a function
:math:`f(p)` of the fraction :math:`p \in [0, 1]` of the run done,

.. math::

    p = \max\left(\frac{\text{epochs done}}{\text{max\_epochs}},\ \frac{\text{elapsed}}{\text{max\_time}},
        \ \frac{\text{steps done}}{\text{max\_steps}}\right), \qquad \eta(p) = \eta_0\, f(p),

where only the limits the trainer has count (Lightning's ``max_epochs``, ``max_time``, ``max_steps``). With the
full number of epochs and no time limit the schedule is the paper's; with ``--trainer.max_time=00:01:00:00``
it is the same schedule in one hour: every phase keeps its share of the run, so the ratio of phase lengths is
unchanged.

The progress is fed by the callback :class:`lightning_gm.callbacks.RunProgress` (attached by the
``lightning_gm`` command), which calls :meth:`ProgressLR.set_progress` before every training batch; the
scheduler's own ``step()`` (Lightning's per-epoch call) recomputes the same rate. A schedule that is stepped
without ever being fed refuses to run silently in its first phase.

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders (section 5: the 3^i
schedule); Loshchilov & Hutter (2017), SGDR (cosine annealing).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Optional, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ProgressLR", "PhasedLR", "BurdaLR", "LinearProgressLR", "CosineProgressLR", "burda_phases",
           "run_progress"]


def run_progress(trainer: Any, epochs_done: Optional[float] = None) -> float:
    r"""The fraction :math:`p \in [0, 1]` of a run done (see the module docstring): the largest of
    ``epochs_done / max_epochs`` (``epochs_done`` default: the current epoch, a fraction within it when given),
    ``global_step / max_steps`` and the elapsed share of ``max_time`` (the trainer's timer: any callback with
    ``time_elapsed`` / ``time_remaining``, as Lightning's ``Timer``), counting only the limits the trainer has."""
    fractions = []
    max_epochs = getattr(trainer, "max_epochs", None)
    if max_epochs is not None and max_epochs > 0:
        done = trainer.current_epoch if epochs_done is None else epochs_done
        fractions.append(done / max_epochs)
    max_steps = getattr(trainer, "max_steps", -1)
    if max_steps is not None and max_steps > 0:
        fractions.append(trainer.global_step / max_steps)
    timer = next((c for c in getattr(trainer, "callbacks", []) if hasattr(c, "time_remaining")
                  and hasattr(c, "time_elapsed")), None)
    if timer is not None:
        remaining = timer.time_remaining("train")
        if remaining is not None:
            elapsed = timer.time_elapsed("train")
            if elapsed + remaining > 0:
                fractions.append(elapsed / (elapsed + remaining))
    return min(1.0, max(fractions, default=0.0))


class ProgressLR(LRScheduler):
    r"""Base class: learning rate :math:`\eta_0 f(p)` of the run's progress :math:`p \in [0, 1]`.

    A subclass implements :meth:`factor`. :attr:`progress` starts at 0; :meth:`set_progress` moves it (and the
    optimiser's rates) at once.

    Args:
        optimizer: the wrapped optimiser (its ``lr`` is :math:`\eta_0`).
        last_epoch: as in ``torch.optim.lr_scheduler`` (-1: a fresh schedule).
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.progress = 0.0
        self.fed = False
        super().__init__(optimizer, last_epoch)

    def factor(self, progress: float) -> float:
        """:math:`f(p)`, the multiple of the initial rate at progress ``p``."""
        raise NotImplementedError

    def set_progress(self, progress: float) -> None:
        """Move to progress ``p`` (clipped to ``[0, 1]``) and set the optimiser's rates."""
        self.progress, self.fed = min(1.0, max(0.0, float(progress))), True
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.last_epoch > 0 and not self.fed:
            raise RuntimeError(
                f"{type(self).__name__} follows the run's progress, which nothing reports: train through the "
                "lightning_gm command (it attaches lightning_gm.callbacks.RunProgress) or add RunProgress() to the "
                "trainer's callbacks")
        f = self.factor(self.progress)
        return [base * f for base in self.base_lrs]


class PhasedLR(ProgressLR):
    r"""Piecewise-constant rate: phase :math:`j` lasts a share :math:`d_j / \sum_i d_i` of the run at
    :math:`\eta_0 \cdot \text{factors}_j`.

    .. math::

        f(p) = \text{factors}_j \quad \text{for} \quad c_{j-1} \le p < c_j, \qquad c_j = \frac{\sum_{i \le j} d_i}{\sum_i d_i}

    Args:
        optimizer: the wrapped optimiser.
        factors: the rate of each phase as a multiple of the initial one.
        durations: the relative lengths of the phases (e.g. their epochs in the paper), positive.
        last_epoch: as in ``torch.optim.lr_scheduler``.
    """

    def __init__(self, optimizer: Optimizer, factors: Sequence[float], durations: Sequence[float],
                 last_epoch: int = -1) -> None:
        if len(factors) != len(durations) or not factors:
            raise ValueError(f"PhasedLR needs one duration per factor, got {len(factors)} factors and "
                             f"{len(durations)} durations")
        if min(durations) <= 0 or min(factors) < 0:
            raise ValueError(f"PhasedLR durations must be > 0 and factors >= 0, got {list(durations)} and "
                             f"{list(factors)}")
        total = float(sum(durations))
        self.factors = [float(f) for f in factors]
        self.durations = [float(d) for d in durations]
        self.boundaries = [sum(self.durations[: j + 1]) / total for j in range(len(self.durations) - 1)]
        super().__init__(optimizer, last_epoch)

    def phase(self, progress: float) -> int:
        """The index of the phase that progress ``p`` falls in."""
        return bisect.bisect_right(self.boundaries, progress)

    def factor(self, progress: float) -> float:
        return self.factors[self.phase(progress)]


def burda_phases(phases: int = 8, growth: float = 3.0, decay: float = 7.0) -> tuple[list[float], list[float]]:
    r"""The factors :math:`10^{-i/\text{decay}}` and durations :math:`\text{growth}^i`, :math:`i = 0 \dots
    \text{phases} - 1`, of Burda et al.'s schedule."""
    return [10.0 ** (-i / decay) for i in range(phases)], [growth**i for i in range(phases)]


class BurdaLR(PhasedLR):
    r"""Burda, Grosse & Salakhutdinov's schedule: phase :math:`i = 0, \dots, 7` lasts :math:`3^i` epochs at
    :math:`\eta_0 \cdot 10^{-i/7}` (with :math:`\eta_0 = 10^{-3}`: 1e-3 down to 1e-4 over 3,280 epochs), here
    as shares of the run (phase :math:`i` is :math:`3^i / 3280` of it).

    The authors' code rounds the rate to two significant digits (``1e-4 * round(10 ** (1 - i/7), 1)``: 7.2e-4,
    5.2e-4, ...); this is the paper's formula, within 1.5% of it.

    Args:
        optimizer: the wrapped optimiser (its ``lr`` is :math:`\eta_0`).
        phases: number of phases (8 in the paper).
        growth: each phase is this many times longer than the previous one (3).
        decay: the rate falls tenfold over this many phases (7).
        last_epoch: as in ``torch.optim.lr_scheduler``.

    References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, section 5.
    """

    def __init__(self, optimizer: Optimizer, phases: int = 8, growth: float = 3.0, decay: float = 7.0,
                 last_epoch: int = -1) -> None:
        if phases < 1 or growth <= 0 or decay <= 0:
            raise ValueError(f"BurdaLR needs phases >= 1, growth > 0, decay > 0, got {phases}, {growth}, {decay}")
        factors, durations = burda_phases(phases, growth, decay)
        super().__init__(optimizer, factors, durations, last_epoch)


class LinearProgressLR(ProgressLR):
    r"""Linear in the progress: :math:`f(p) = s + (e - s)\, p` (``torch``'s ``LinearLR`` over the whole run).

    Args:
        optimizer: the wrapped optimiser.
        start_factor: :math:`s`, the multiple of the rate at the start.
        end_factor: :math:`e`, at the end of the run.
        last_epoch: as in ``torch.optim.lr_scheduler``.
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0, end_factor: float = 0.01,
                 last_epoch: int = -1) -> None:
        if start_factor < 0 or end_factor < 0:
            raise ValueError(f"LinearProgressLR factors must be >= 0, got {start_factor} and {end_factor}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, progress: float) -> float:
        return self.start_factor + (self.end_factor - self.start_factor) * progress


class CosineProgressLR(ProgressLR):
    r"""Cosine annealing over the run: :math:`f(p) = m + (1 - m)\,\frac{1 + \cos \pi p}{2}`.

    Args:
        optimizer: the wrapped optimiser.
        min_factor: :math:`m`, the multiple of the rate at the end.
        last_epoch: as in ``torch.optim.lr_scheduler``.
    """

    def __init__(self, optimizer: Optimizer, min_factor: float = 0.0, last_epoch: int = -1) -> None:
        if min_factor < 0:
            raise ValueError(f"CosineProgressLR.min_factor must be >= 0, got {min_factor}")
        self.min_factor = float(min_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, progress: float) -> float:
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

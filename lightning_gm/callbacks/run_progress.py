r"""The run's progress, fed to the schedules that follow it (:mod:`lightning_gm.schedules`), so that a budget
(``--trainer.max_time``, ``max_steps``, fewer ``max_epochs``) compresses a recipe instead of cutting it:

.. math::

    p = \max\left(\frac{\text{epoch} + b / B}{\text{max\_epochs}},\ \frac{\text{elapsed}}{\text{max\_time}},
        \ \frac{\text{global\_step}}{\text{max\_steps}}\right) \in [0, 1]

(``b`` the batch index within the epoch of ``B`` batches; the elapsed time is Lightning's own ``Timer``, which
also survives a resume from a checkpoint).
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer

__all__ = ["RunProgress", "run_progress"]


def run_progress(trainer: Any, batch_idx: int = 0) -> float:
    """The fraction of the run done before batch ``batch_idx`` of the current epoch (see the module docstring)."""
    fractions = []
    max_epochs = getattr(trainer, "max_epochs", None)
    if max_epochs is not None and max_epochs > 0:
        batches = trainer.num_training_batches
        within = batch_idx / batches if isinstance(batches, (int, float)) and 0 < batches < math.inf else 0.0
        fractions.append((trainer.current_epoch + within) / max_epochs)
    max_steps = getattr(trainer, "max_steps", -1)
    if max_steps is not None and max_steps > 0:
        fractions.append(trainer.global_step / max_steps)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None:
        remaining = timer.time_remaining("train")
        if remaining is not None:
            elapsed = timer.time_elapsed("train")
            if elapsed + remaining > 0:
                fractions.append(elapsed / (elapsed + remaining))
    return min(1.0, max(fractions, default=0.0))


class RunProgress(pl.Callback):
    """Before every training batch, hand :func:`run_progress` to every learning-rate scheduler that follows the
    run's progress (one with a ``set_progress(p)`` method, e.g. :class:`lightning_gm.schedules.BurdaLR`)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if hasattr(c.scheduler, "set_progress")]
        if schedulers:
            p = run_progress(trainer, batch_idx)
            for scheduler in schedulers:
                scheduler.set_progress(p)

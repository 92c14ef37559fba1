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

from lightning_gm.schedules import run_progress

__all__ = ["RunProgress"]


class RunProgress(pl.Callback):
    """Before every training batch, hand :func:`~lightning_gm.schedules.run_progress` to every learning-rate
    scheduler that follows the run's progress (one with a ``set_progress(p)`` method, e.g.
    :class:`lightning_gm.schedules.BurdaLR`)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if hasattr(c.scheduler, "set_progress")]
        if schedulers:
            batches = trainer.num_training_batches
            within = batch_idx / batches if isinstance(batches, (int, float)) and 0 < batches < math.inf else 0.0
            p = run_progress(trainer, trainer.current_epoch + within)
            for scheduler in schedulers:
                scheduler.set_progress(p)

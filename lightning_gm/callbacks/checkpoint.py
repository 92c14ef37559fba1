"""The run's two checkpoints: ``best-epoch=NNN.ckpt`` by the model's monitored metric, and ``last.ckpt``, the last state.

Lightning's ``ModelCheckpoint(save_top_k=1, save_last=True)`` rewrites ``last.ckpt`` only when it writes a
top-k checkpoint, i.e. in epochs where the monitored metric improved: after a worse epoch ``last.ckpt`` is an
older state, ``--ckpt_path last`` repeats epochs and a test of "last" scores an older model. So the run keeps
two callbacks: :func:`best_checkpoint` (Lightning's, top-1 by the monitor) and :class:`LastCheckpoint`, which
writes ``last.ckpt`` at the end of every epoch (with or without a validation in it, with or without an optimiser
step in it) and, through Lightning's ``save_on_exception``, when the run is
stopped by SIGINT or SIGTERM (also mid-epoch). An error (a NaN loss, a crash) writes nothing, so the last
checkpoint stays the last good state.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_gm.signals import stop_signal_of

__all__ = ["LastCheckpoint", "best_checkpoint", "BEST_FILENAME"]

#: file name pattern of the best checkpoint (``best-epoch=007.ckpt``)
BEST_FILENAME = "best-{epoch:03d}"


def best_checkpoint(dirpath: str, monitor: Optional[str], mode: str = "min") -> ModelCheckpoint:
    """``best-epoch=NNN.ckpt``: the epoch with the best ``monitor`` (the latest epoch when ``monitor`` is None)."""
    return ModelCheckpoint(dirpath=dirpath, filename=BEST_FILENAME, monitor=monitor, mode=mode, save_top_k=1,
                           save_last=False)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the state at the end of every training epoch (after its validation), and the state at a
    clean interruption (SIGINT, SIGTERM) during ``fit``, wherever it happened.

    Args:
        dirpath: the run's checkpoint folder.
    """

    def __init__(self, dirpath: str) -> None:
        # at the end of every training epoch (Lightning's hook runs after the epoch's validation), also in epochs
        # without one (``check_val_every_n_epoch`` > 1), where Lightning's default would wait for the next validation
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST, monitor=None, save_top_k=1,
                         save_last=False, save_on_exception=True, enable_version_counter=False,
                         save_on_train_epoch_end=True)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Lightning saves nothing while the global step is 0 ("no steps were taken"); a family that learns
        without optimiser steps (the Hopfield network stores its patterns by a Hebbian rule) stays there, so its
        epochs are saved here, through the trainer's public ``save_checkpoint``."""
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.global_step == 0 and trainer.state.fn == "fit" and not trainer.sanity_checking \
                and not trainer.fast_dev_run and self.dirpath:
            path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
            trainer.save_checkpoint(path, self.save_weights_only)
            self.best_model_path = path

    @property
    def state_key(self) -> str:
        # distinct from the best checkpoint's key even when the model has no monitor
        return self._generate_state_key(kind="last", every_n_epochs=self._every_n_epochs)

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        """Save on an interruption during ``fit`` only: never a diverged or crashed state, and never during a
        separate ``test`` (whose weights are the tested checkpoint's, not the run's last state)."""
        if stop_signal_of(exception) is None or trainer.state.fn != "fit":
            return
        super().on_exception(trainer, pl_module, exception)

    def saved_step(self) -> Optional[int]:
        """The global step of the state ``last.ckpt`` holds, or ``None`` before the first save."""
        step: Any = getattr(self, "_last_global_step_saved", None)
        return int(step) if self.best_model_path and step is not None else None

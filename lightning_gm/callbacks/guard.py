"""Stop training at the first NaN or infinite loss or validation metric, before any checkpoint is written."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import lightning.pytorch as pl
import torch

from lightning_gm.errors import DivergenceError

__all__ = ["DivergenceGuard"]


def _value(x: Any) -> float:
    return float(x.detach().float().cpu()) if isinstance(x, torch.Tensor) else float(x)


class DivergenceGuard(pl.Callback):
    """Raise :class:`DivergenceError` naming the step and the metric when the training loss, or any
    logged ``val/`` metric, stops being finite.

    Lightning runs checkpoint callbacks after all others, so the error is raised before a checkpoint
    of the diverged state can be written: ``last.ckpt`` stays the last good one. Under DDP the check
    is agreed across processes so that every rank stops together.
    """

    def _where(self, trainer: pl.Trainer, batch_idx: Optional[int] = None) -> str:
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        kept = f" The last good checkpoint, {ckpt}, was left untouched." if ckpt else ""
        batch = f", batch {batch_idx}" if batch_idx is not None else ""
        return (
            f"in epoch {trainer.current_epoch}{batch} (global step {trainer.global_step}).{kept} Lower the learning "
            "rate, check the data for NaNs, or resume from the last checkpoint with --ckpt_path."
        )

    def _check(self, trainer: pl.Trainer, values: Mapping[str, Any], batch_idx: Optional[int] = None) -> None:
        bad = next(((k, _value(v)) for k, v in values.items() if not math.isfinite(_value(v))), None)
        if trainer.world_size > 1:
            anywhere = trainer.strategy.reduce_boolean_decision(bad is not None, all=False)
            if anywhere and bad is None:
                bad = ("(on another process)", math.nan)
        if bad is not None:
            name, value = bad
            raise DivergenceError(f"metric '{name}' became {value} {self._where(trainer, batch_idx)}")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            self._check(trainer, {"train/loss": loss}, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

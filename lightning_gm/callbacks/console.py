"""What the terminal shows during a run: one line about the model and data, and a progress bar that reads
``Epoch i/N`` with the model's own metric.

Lightning's defaults print a per-layer table and a bar titled ``Epoch 0`` with a ``v_num`` and whatever the model
flagged ``prog_bar``; a person wants to know how far the run is and how good the model is by its own measure
(``val/elbo`` for a VAE, ``val/nll`` for a flow: the model's ``monitor``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, TQDMProgressBar

__all__ = ["EpochLines", "EpochProgressBar", "OneLineSummary", "count", "epoch_label", "progress_callback"]


def epoch_label(trainer: "pl.Trainer") -> str:
    """``Epoch 3/30`` (counted from 1; the total when ``max_epochs`` bounds the run)."""
    total = trainer.max_epochs
    epoch = trainer.current_epoch + 1
    return f"Epoch {epoch}/{total}" if total is not None and 0 < total < 10**9 else f"Epoch {epoch}"


def count(n: Union[int, float]) -> str:
    """``18,256`` or ``1.2 M``: a count a person reads at a glance."""
    n = float(n)
    if n >= 10**6:
        return f"{n / 10**6:.1f} M"
    return f"{int(n):,}"


def shown_metrics(items: dict[str, Any], trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Any]:
    """A progress display's metrics: those logged with ``prog_bar=True`` and the model's ``monitor`` (e.g.
    ``val/elbo``), without Lightning's ``v_num``."""
    items.pop("v_num", None)
    monitor = getattr(pl_module, "monitor", None)
    value = trainer.callback_metrics.get(monitor) if isinstance(monitor, str) else None
    if value is not None and getattr(value, "numel", lambda: 1)() == 1 and monitor not in items:
        value = float(value)
        if math.isfinite(value):
            items[monitor] = value
    return items


class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar titled ``Epoch i/N``, showing the model's ``monitor`` (e.g. ``val/elbo``) beside
    the metrics it logs with ``prog_bar=True``, and no ``v_num``."""

    def on_train_epoch_start(self, trainer: "pl.Trainer", *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(epoch_label(trainer))

    def get_metrics(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Union[int, str, float, dict[str, float]]]:
        return shown_metrics(super().get_metrics(trainer, pl_module), trainer, pl_module)


class EpochLines(ProgressBar):
    """The progress of a run whose output is not a terminal (a log file, a batch job): one line per training
    epoch, ``Epoch 3/30: val/elbo=-101.2, train/loss=102.5 (41.3 s)``, where a bar would be redrawn at every batch
    (in a file every redraw stays: megabytes over a long run)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started: Optional[float] = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def get_metrics(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Union[int, str, float, dict[str, float]]]:
        return shown_metrics(super().get_metrics(trainer, pl_module), trainer, pl_module)

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """After the epoch's validation (Lightning runs it before this hook), so its metric is the epoch's."""
        if not self._enabled or self._started is None:
            return
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in self.get_metrics(trainer, pl_module).items())
        print(f"{epoch_label(trainer)}: {values or 'done'} ({time.monotonic() - self._started:.1f} s)", flush=True)


def progress_callback(stream: Any = None) -> ProgressBar:
    """The run's progress display: the ``Epoch i/N`` bar on a terminal, a line per epoch otherwise."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return EpochProgressBar() if callable(isatty) and isatty() else EpochLines()


class OneLineSummary(ModelSummary):
    """One line at the start of ``fit`` instead of Lightning's layer table: the model, its parameter count,
    the data and the metric that picks the best checkpoint."""

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.is_global_zero:
            return
        n = pl_module.num_parameters() if hasattr(pl_module, "num_parameters") else sum(
            p.numel() for p in pl_module.parameters())
        parts = [f"{type(pl_module).__name__} ({count(n)} parameters)"]
        dm = getattr(trainer, "datamodule", None)
        name = (getattr(dm, "info", None) or {}).get("dataset") if dm is not None else None
        splits = getattr(dm, "splits", None) or {}
        sizes = "/".join(count(len(splits[s][0])) for s in ("train", "val", "test") if s in splits)
        if name:
            parts.append(f"on {name}" + (f" ({sizes} train/val/test)" if sizes.count("/") == 2 else ""))
        parts.append(f"on {trainer.strategy.root_device}")
        monitor = getattr(pl_module, "monitor", None)
        if monitor:
            parts.append(f"best checkpoint by {monitor} ({getattr(pl_module, 'monitor_mode', 'min')})")
        print(", ".join(parts), flush=True)

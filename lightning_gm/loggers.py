"""The platform's loggers: Lightning's CSV and W&B loggers, fitted to run folders.

* :class:`CSVLogger` keeps a resumed run's earlier rows. Lightning's ``CSVLogger`` deletes an existing
  ``metrics.csv`` when its writer starts, so a run resumed from ``last.ckpt`` would lose the record of the epochs
  before the interruption; this one appends (rows carry ``epoch`` and ``step``), and every row carries
  ``wall_time`` (Unix seconds when it was logged), so a learning curve can be drawn against wall-clock time, the
  axis on which models trained at equal budget are compared. Every shipped config uses it.
* :class:`WandbLogger` is Lightning's (same arguments) with the run folder created before ``wandb.init`` (else
  W&B warns that its git root does not exist) and without the ``anonymous`` argument Lightning always passes
  (W&B warns that it has no effect). The command gives every run folder one W&B run id (kept in
  ``summary.json``), so a later ``test`` or a resumed ``fit`` continues the same W&B run (``resume="allow"``).
"""

from __future__ import annotations

import csv
import netrc
import os
import secrets
import string
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["CSVLogger", "WandbLogger", "new_wandb_id", "wandb_needs_offline"]


def new_wandb_id() -> str:
    """A fresh W&B run id (8 characters of ``[a-z0-9]``, as W&B's own)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def wandb_needs_offline() -> bool:
    """W&B goes offline unless the user chose a mode (``WANDB_MODE``) or has credentials
    (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc): no prompt, no hang, ``wandb sync`` later."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # keep the earlier rows; continue with the file's header so later rows line up with it
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (same arguments), appending to an existing ``metrics.csv``, with a ``wall_time`` column."""

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        super().log_metrics({**metrics, "wall_time": round(time.time(), 3)}, step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger (same arguments) that creates its folder before the W&B run starts and does not
    pass W&B the deprecated ``anonymous`` setting unless it was asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None and self.save_dir:
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        return super().experiment

"""A CSV logger that keeps a resumed run's earlier rows.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when its writer starts, so a run
resumed from ``last.ckpt`` would lose the record of the epochs before the interruption.
:class:`CSVLogger` here appends to the file instead (rows carry ``epoch`` and ``step``), and is what
every shipped config uses.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["CSVLogger"]


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # keep the earlier rows; continue with the file's header so later rows line up with it
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (same arguments), appending to an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

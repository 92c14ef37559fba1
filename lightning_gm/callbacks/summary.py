"""``summary.json``: the run's final numbers and what they mean, written atomically by rank 0.

The file is what ``lightning_gm compare`` and a person read first. It is merged, not overwritten,
so a later ``lightning_gm test`` of the same run adds its test numbers to the training record. The
same fields go to the W&B run summary.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger

__all__ = ["RunSummary", "read_summary", "write_json_atomic"]

SUMMARY_FILE = "summary.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file and rename it over ``path`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's summary, or ``{}`` if it has none yet."""
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _scalar(v: Any) -> Optional[float]:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        v = v.item()
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else str(v)  # type: ignore[return-value]
    return None


class RunSummary(pl.Callback):
    """Write ``<run_dir>/summary.json`` at the end of fit and of test (and on failure).

    Args:
        run_dir: the run folder.
        experiment: experiment name (group of runs).
        run_name: the run's name.
    """

    def __init__(self, run_dir: str, experiment: str = "", run_name: str = "", tags: Optional[list[str]] = None) -> None:
        self.run_dir = Path(run_dir)
        self.experiment, self.run_name = experiment, run_name
        self.tags = list(tags or [])
        self._start: Optional[float] = None

    @property
    def path(self) -> Path:
        return self.run_dir / SUMMARY_FILE

    def _update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, **extra: Any) -> None:
        if not trainer.is_global_zero:
            return
        summary = read_summary(self.run_dir)
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        dm = getattr(trainer, "datamodule", None)
        summary.update(
            experiment=self.experiment,
            run_name=self.run_name,
            tags=self.tags,
            run_dir=str(self.run_dir),
            model=f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            family=getattr(pl_module, "family", "generative"),
            num_parameters=(pl_module.num_parameters() if hasattr(pl_module, "num_parameters")
                            else sum(p.numel() for p in pl_module.parameters())),
            data=getattr(dm, "info", {}),
        )
        if stage == "fit":
            ckpt = trainer.checkpoint_callback
            summary.update(
                epochs=trainer.current_epoch,
                global_step=trainer.global_step,
                fit_wall_time_s=round(time.time() - self._start, 2) if self._start else None,
                best_checkpoint=getattr(ckpt, "best_model_path", None) or None,
                best_score=_scalar(getattr(ckpt, "best_model_score", None)),
                last_checkpoint=getattr(ckpt, "last_model_path", None) or None,
                monitor=getattr(pl_module, "monitor", None),
                fit_metrics={k: v for k, v in metrics.items() if not k.startswith("test/")},
            )
        if stage == "test":
            summary["test"] = {k: v for k, v in metrics.items() if k.startswith("test/")}
            try:
                summary["estimator"] = pl_module.estimator  # type: ignore[attr-defined]
            except (AttributeError, NotImplementedError):
                summary["estimator"] = None
            # an evaluation that computed test/nll names what it computed (e.g. a subset of the test set)
            labels = [cb.estimator_label for cb in trainer.callbacks
                      if isinstance(getattr(cb, "estimator_label", None), str)]
            if labels:
                summary["estimator"] = labels[0]
            summary["test_wall_time_s"] = round(time.time() - self._start, 2) if self._start else None
            # evaluations that could not run say why (e.g. SampleQuality without its feature network)
            skipped = {type(cb).__name__: cb.skipped for cb in trainer.callbacks if isinstance(getattr(cb, "skipped", None), str)}
            if skipped:
                summary["skipped"] = skipped
            else:
                summary.pop("skipped", None)
        summary.update(extra)
        write_json_atomic(self.path, summary)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                flat = {f"summary/{k}": v for k, v in summary.items() if isinstance(v, (str, int, float))}
                flat.update({f"summary/data.{k}": v for k, v in summary.get("data", {}).items()
                             if isinstance(v, (str, int, float, bool))})
                flat.update({k: v for k, v in summary.get("test", {}).items()})
                if summary.get("estimator"):
                    flat["test/estimator"] = summary["estimator"]
                logger.experiment.summary.update(flat)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.time()
        self._update(trainer, pl_module, "start", status="running")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._update(trainer, pl_module, "fit", status="interrupted" if trainer.interrupted else "fitted")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.time()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._update(trainer, pl_module, "test", status="tested")

    def mark(self, trainer: pl.Trainer, pl_module: pl.LightningModule, **fields: Any) -> None:
        """Record extra fields (e.g. ``status="pruned"``) in the summary."""
        self._update(trainer, pl_module, "mark", **fields)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Ctrl-C, or a SIGTERM acted on (Lightning's SIGTERMException is a SystemExit): stopped, not failed
        status = "interrupted" if isinstance(exception, (KeyboardInterrupt, SystemExit)) else "failed"
        self._update(trainer, pl_module, "error", status=status, error=f"{type(exception).__name__}: {exception}")

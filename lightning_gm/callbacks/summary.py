"""``summary.json``: the run's numbers, what they mean, and what happened to it, written atomically by rank 0.

The file is what ``lightning_gm compare`` and a person read first. A run folder is written by ``fit`` and only
added to by later commands (``test``, ``validate``, a resumed ``fit``), so the file is merged, never replaced:

* ``history``: one entry per command that ran on the folder, in order: ``command`` (fit, test, ...),
  ``status`` (running, finished, interrupted, failed, pruned, killed), ``started``/``ended``, the ``signal`` that
  stopped it or the ``error`` it ended with, the ``config`` file it ran with and the ``checkpoint`` it loaded;
* ``status``: the run as a whole, from that history: the latest ``fit`` decides (``running``, ``fitted``,
  ``interrupted``, ``failed``, ``pruned``), and a test that finished after it makes a fitted run ``tested``.
  An interrupted or failed *later* command does not change it (a Ctrl-C during a re-test leaves a finished
  fit ``tested``); ``error`` and ``signal`` are present only when they explain the current status;
* the numbers: the training record (``epochs``, ``best_score``, ``fit_metrics``, ...) and the latest test
  (``test``, ``estimator``, ``test_wall_time_s`` from the start of the test, its evaluations included).

The same fields go to the W&B run's summary (``summary/<field>``, and the ``test/`` metrics as they are),
where ``summary/error`` and ``summary/signal`` are always written (empty when nothing is wrong) so a stale value
from an earlier part of the run cannot survive a later success.
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

from lightning_gm.atomic import write_text_atomic
from lightning_gm.signals import stop_signal_of

__all__ = ["RunSummary", "read_summary", "write_json_atomic", "run_status", "format_test_table", "SUMMARY_FILE"]

SUMMARY_FILE = "summary.json"
#: fields that describe a test of the model; a new fit clears them (they belonged to the previous weights)
TEST_FIELDS = ("test", "estimator", "conservative_estimator", "warnings", "skipped", "test_wall_time_s",
               "tested_checkpoint")
_FIT_STATUS = {"running": "running", "finished": "fitted", "interrupted": "interrupted", "failed": "failed",
               "pruned": "pruned", "killed": "killed"}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file and rename it over ``path`` (never a half-written file)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's summary, or ``{}`` if it has none yet (or an unreadable one)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_status(history: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The run's ``status`` (and the ``error``/``signal`` behind it) from its command history, see the module
    docstring. ``None`` for an empty history."""
    if not history:
        return None
    fits = [i for i, e in enumerate(history) if e.get("command") == "fit"]
    decisive = history[fits[-1]] if fits else history[-1]
    after = history[fits[-1] + 1:] if fits else history
    status = _FIT_STATUS.get(decisive.get("status", ""), decisive.get("status", "unknown"))
    if not fits:  # e.g. a test of a checkpoint trained elsewhere
        status = {"finished": "tested" if decisive.get("command") == "test" else "finished"}.get(status, status)
    if status in ("fitted", "finished") and any(e.get("command") == "test" and e.get("status") == "finished"
                                                for e in after):
        status = "tested"
    out: dict[str, Any] = {"status": status}
    if status in ("interrupted", "failed", "killed"):
        for key in ("error", "signal"):
            if decisive.get(key):
                out[key] = decisive[key]
    return out


def _scalar(v: Any) -> Optional[float]:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        v = v.item()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) if math.isfinite(v) else str(v)  # type: ignore[return-value]
    return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def format_test_table(summary: dict[str, Any]) -> str:
    """The test results as a person reads them: what produced the number (estimator, and its conservative
    counterpart), the NLL with its standard error, then every other ``test/`` metric."""
    test = dict(summary.get("test") or {})
    rows: list[tuple[str, str]] = [("estimator", str(summary.get("estimator") or "-"))]
    if summary.get("conservative_estimator"):
        rows.append(("conservative estimator", str(summary["conservative_estimator"])))

    def pm(key: str) -> Optional[str]:
        value = test.pop(key, None)
        if value is None:
            return None
        err = test.pop(f"{key}_stderr", None)
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        return text + (f" ± {err:.2f}" if isinstance(err, float) else "")

    for key in ("test/nll", "test/nll_conservative"):
        cell = pm(key)
        if cell is not None:
            rows.append((key, cell + " nats"))
    rows += [(k, f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in sorted(test.items())]
    for warning in summary.get("warnings") or []:
        rows.append(("warning", str(warning)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


class RunSummary(pl.Callback):
    """Write ``<run_dir>/summary.json`` (and the W&B summary) as each command starts, ends or is stopped.

    Args:
        run_dir: the run folder.
        experiment: experiment name (group of runs).
        run_name: the run's name.
        tags: the run's tags.
        command: the subcommand this process runs (``fit``, ``test``, ...); a ``fit`` also records the test
            it runs after training.
        config_file: the file this command's resolved configuration was saved to (in the run folder).
    """

    def __init__(self, run_dir: str, experiment: str = "", run_name: str = "", tags: Optional[list[str]] = None,
                 command: str = "fit", config_file: Optional[str] = None) -> None:
        self.run_dir = Path(run_dir)
        self.experiment, self.run_name = experiment, run_name
        self.tags = list(tags or [])
        self.command, self.config_file = command, config_file
        #: set once a command's loop started: before that, a failure is a failed start, which leaves no record
        self.started = False
        #: the signal that stopped the command ("SIGINT", "SIGTERM"), once one did
        self.stop_signal: Optional[str] = None
        self._fit_start: Optional[float] = None
        self._stage_start: dict[str, float] = {}
        self._entry: Optional[dict[str, Any]] = None
        self._entry_index: Optional[int] = None

    @property
    def path(self) -> Path:
        return self.run_dir / SUMMARY_FILE

    # ------------------------------------------------------------------ writing
    def _write(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str, **extra: Any) -> None:
        if not trainer.is_global_zero:
            return
        summary = read_summary(self.run_dir)
        history: list[dict[str, Any]] = summary.get("history") or []
        if self._entry is not None:  # this command's entry: appended once, then updated in place
            if self._entry_index is None or self._entry_index >= len(history):
                history.append(self._entry)
                self._entry_index = len(history) - 1
            else:
                history[self._entry_index] = self._entry
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
            monitor=getattr(pl_module, "monitor", None),
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                summary["wandb_id"] = logger.version
        if stage == "fit_start":
            for key in TEST_FIELDS:
                summary.pop(key, None)
            for entry in history[:-1]:  # a fit resumes the folder: an earlier command still "running" was killed
                if entry.get("status") == "running":
                    entry.update(status="killed", error="the process ended without a word (killed?)")
        if stage in ("fit_end", "fit_stopped"):
            ckpt = trainer.checkpoint_callback
            summary.update(
                epochs=trainer.current_epoch,
                global_step=trainer.global_step,
                fit_wall_time_s=round(time.time() - self._fit_start, 2) if self._fit_start else None,
                best_checkpoint=getattr(ckpt, "best_model_path", None) or None,
                best_score=_scalar(getattr(ckpt, "best_model_score", None)),
                fit_metrics={k: v for k, v in metrics.items() if not k.startswith("test/")},
            )
            last = self.run_dir / "checkpoints" / "last.ckpt"  # on a stop, the command updates it once saved
            summary["last_checkpoint"] = str(last) if last.is_file() else None
        if stage == "test_end":
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
            start = self._stage_start.get("test")
            summary["test_wall_time_s"] = round(time.time() - start, 2) if start else None
            summary["tested_checkpoint"] = trainer.ckpt_path
            # what the model and the evaluations say beside their numbers (summary_fields(): e.g. the conservative
            # estimator's label, warnings a reader must see); warnings are collected from all of them
            summary.pop("conservative_estimator", None)
            warnings: list[str] = []
            for source in [pl_module, *trainer.callbacks]:
                fields = source.summary_fields() if callable(getattr(source, "summary_fields", None)) else {}
                warnings += list(fields.pop("warnings", []))
                summary.update(fields)
            summary["warnings"] = warnings
            # evaluations that could not run say why (e.g. SampleQuality without its feature network)
            skipped = {type(cb).__name__: cb.skipped for cb in trainer.callbacks if isinstance(getattr(cb, "skipped", None), str)}
            if skipped:
                summary["skipped"] = skipped
            else:
                summary.pop("skipped", None)
        if stage == "validate_end":
            summary["validate"] = {k: v for k, v in metrics.items() if k.startswith("val/")}
        summary.update(extra)
        summary["history"] = history
        for key in ("status", "error", "signal"):
            summary.pop(key, None)
        summary.update(run_status(history) or {"status": "unknown"})
        write_json_atomic(self.path, summary)
        self._to_wandb(trainer, summary)

    @staticmethod
    def _to_wandb(trainer: "pl.Trainer", summary: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            flat = {f"summary/{k}": v for k, v in summary.items() if isinstance(v, (str, int, float))}
            flat.update({f"summary/{k}": summary.get(k) or "" for k in ("error", "signal")})
            flat.update({f"summary/data.{k}": v for k, v in summary.get("data", {}).items()
                         if isinstance(v, (str, int, float, bool))})
            flat.update({k: v for k, v in (summary.get("test") or {}).items()})
            if summary.get("estimator"):
                flat["test/estimator"] = summary["estimator"]
            logger.experiment.summary.update(flat)

    def _begin(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", command: str, stage: str) -> None:
        self.started = True
        self._entry_index = None
        self._entry = {"command": command, "status": "running", "started": _now()}
        if self.config_file:
            self._entry["config"] = self.config_file
        if trainer.ckpt_path:
            self._entry["checkpoint"] = str(trainer.ckpt_path)
        self._write(trainer, pl_module, stage)

    def _end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str, status: str = "finished",
             **fields: Any) -> None:
        if self._entry is not None:
            self._entry.update(status=status, ended=_now(), **fields)
        self._write(trainer, pl_module, stage)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        # before any callback's on_<stage>_start: a test's time includes evaluations done there (AIS log Z)
        self._stage_start[stage] = time.time()

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._fit_start = time.time()
        self._begin(trainer, pl_module, "fit", "fit_start")

    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._end(trainer, pl_module, "fit_end")

    def on_test_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._begin(trainer, pl_module, "test", "test_start")

    def on_test_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._end(trainer, pl_module, "test_end", **self._test_record(trainer, pl_module))

    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.state.fn == "validate":
            self._begin(trainer, pl_module, "validate", "validate_start")

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.state.fn == "validate":
            self._end(trainer, pl_module, "validate_end")

    def on_predict_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._begin(trainer, pl_module, "predict", "predict_start")

    def on_predict_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._end(trainer, pl_module, "predict_end")

    def mark(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", status: str, **fields: Any) -> None:
        """Set this command's outcome (e.g. ``status="pruned"``) with extra fields in its history entry."""
        if self._entry is not None:
            self._entry.update(status=status, **fields)
        self._write(trainer, pl_module, "mark")

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        sig = self.stop_signal = stop_signal_of(exception)
        if not self.started or self._entry is None or self._entry.get("status") != "running":
            return  # a failed start leaves no record (the command removes what it created)
        where = ""
        if self._entry["command"] == "fit":  # counted from 1, as the progress bar shows it
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            where = f"epoch {trainer.current_epoch + 1}" + (f" of {total}" if total else "") + f" (step {trainer.global_step})"
        if sig:
            fields = {"signal": sig, "error": f"stopped by {sig}" + (f" in {where}" if where else "")}
        else:
            fields = {"error": f"{type(exception).__name__}: {exception}"}
        stage = "fit_stopped" if self._entry["command"] == "fit" else "stopped"
        self._end(trainer, pl_module, stage, status="interrupted" if sig else "failed", **fields)

    @staticmethod
    def _test_record(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Any]:
        """The test's headline in its history entry (the full numbers are the summary's ``test``)."""
        nll = _scalar(trainer.callback_metrics.get("test/nll"))
        try:
            estimator = pl_module.estimator  # type: ignore[attr-defined]
        except (AttributeError, NotImplementedError):
            estimator = None
        return {k: v for k, v in (("test/nll", nll), ("estimator", estimator)) if v is not None}

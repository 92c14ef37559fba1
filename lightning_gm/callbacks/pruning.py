"""Report a validation metric to an Optuna trial each epoch and stop the run when the pruner says so.

Used inside the trial processes that ``lightning_gm sweep`` launches: the CLI adds it when the
environment variable ``LIGHTNING_GM_OPTUNA_TRIAL`` (:data:`TRIAL_ENV`) names the study and trial, and
a pruned trial's process exits with :data:`PRUNED_EXIT_CODE`. Only rank 0 talks to the study; the
decision is broadcast so every DDP process stops at the same epoch (Optuna's own Lightning callback
does not support DDP). The names the sweep and the CLI share live here, so neither imports the other.
"""

from __future__ import annotations

import json
import math
from typing import Any

import lightning.pytorch as pl

__all__ = ["OptunaPruning", "make_pruner", "from_spec", "TRIAL_ENV", "PRUNED_EXIT_CODE"]

#: environment variable through which a trial process learns its study and trial
TRIAL_ENV = "LIGHTNING_GM_OPTUNA_TRIAL"
#: exit code of a trial process that the pruner stopped
PRUNED_EXIT_CODE = 3


def from_spec(what: str, choices: dict[str, Any], spec: dict[str, Any], default: str, where: str) -> Any:
    """``choices[spec["name"]](**other keys)``: an Optuna sampler or pruner as a sweep file describes it, with
    a one-line :class:`ConfigError` naming the key for an unknown name or argument."""
    from lightning_gm.errors import ConfigError

    name = str(spec.get("name", default)).lower()
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    if name not in choices:
        raise ConfigError(f"{where}: {what}.name must be one of {sorted(choices)}, got {name!r}")
    try:
        return choices[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {what} {name}: {exc}") from exc


def make_pruner(spec: dict[str, Any], where: str = "sweep") -> Any:
    """The Optuna pruner a sweep file's ``pruner: {name: median | hyperband | none, ...}`` describes."""
    import optuna

    pruners = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "none": optuna.pruners.NopPruner}
    return from_spec("pruner", pruners, spec, "median", where)


class OptunaPruning(pl.Callback):
    """Args:
        storage: Optuna storage URL. study: study name. trial_id: the trial's storage id.
        metric: the logged metric reported each validation epoch. pruner: the study's pruner spec.
    """

    def __init__(self, storage: str, study: str, trial_id: int, metric: str, pruner: dict[str, Any]) -> None:
        self.storage, self.study_name, self.trial_id = storage, study, trial_id
        self.metric, self.pruner_spec = metric, pruner
        self.pruned = False
        self._trial: Any = None

    @classmethod
    def from_env(cls, value: str) -> "OptunaPruning":
        return cls(**json.loads(value))

    def _get_trial(self) -> Any:
        if self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.study_name, storage=self.storage,
                                      pruner=make_pruner(self.pruner_spec))
            self._trial = optuna.Trial(study, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.metric)
            if value is not None and math.isfinite(float(value)):
                trial = self._get_trial()
                trial.report(float(value), step=trainer.current_epoch)
                prune = bool(trial.should_prune())
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned = True
            trainer.should_stop = True

"""The callbacks a model's declarations call for, attached by the ``lightning_gm`` command (one call in
``cli.py``): a model declares what it needs (capabilities and parameter groups), it never builds callbacks.

* every run: :class:`~lightning_gm.callbacks.run_progress.RunProgress`, which feeds the run's progress to the
  learning-rate schedules that follow it (:mod:`lightning_gm.schedules`);
* :func:`evaluations_for`: the test evaluations a model's declarations ask for.

Outside the command (a ``Trainer`` built in Python), pass ``callbacks=callbacks_for(model)`` yourself.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from lightning_gm.callbacks.iwae import IWAEEvaluation
from lightning_gm.callbacks.run_progress import RunProgress

__all__ = ["callbacks_for", "evaluations_for"]


def evaluations_for(model: Any) -> list[pl.Callback]:
    """The test evaluations ``model`` declares (checked by capability, not by class): a model with
    ``log_weights(x, n, noise)`` and an ``iw_evaluation`` (an
    :class:`~lightning_gm.estimators.seeded.IWEvaluation`, or ``None`` when it needs none) gets
    :class:`~lightning_gm.callbacks.iwae.IWAEEvaluation`, which reads the declaration at test time."""
    found: list[pl.Callback] = []
    if getattr(model, "iw_evaluation", None) is not None and callable(getattr(model, "log_weights", None)):
        found.append(IWAEEvaluation())
    return found


def callbacks_for(model: Any) -> list[pl.Callback]:
    """Every callback ``model`` calls for: :class:`RunProgress` and :func:`evaluations_for`."""
    return [RunProgress(), *evaluations_for(model)]

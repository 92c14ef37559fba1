"""The callbacks a model's declarations call for, attached by the ``lightning_gm`` command (one call in
``cli.py``): a model declares what it needs (capabilities and parameter groups), it never builds callbacks.

* every run: :class:`~lightning_gm.callbacks.run_progress.RunProgress`, which feeds the run's progress to the
  learning-rate schedules that follow it (:mod:`lightning_gm.schedules`);
* :func:`evaluations_for`: the test evaluations a model's declarations ask for: importance-weighted
  evaluation for a latent-variable model, the AIS bracket (:class:`~lightning_gm.callbacks.ais.AISEvaluation`:
  RAISE beside the forward AIS number, the stored log-weights) for an energy model, so that a model tested from
  a bare checkpoint (``lightning_gm test --model=<class> --ckpt_path ...``) is reported as its config would
  report it. An evaluation the configuration already lists (with its own settings) is not added again.

Outside the command (a ``Trainer`` built in Python), pass ``callbacks=callbacks_for(model)`` yourself.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning.pytorch as pl

from lightning_gm.callbacks.ais import AISEvaluation
from lightning_gm.callbacks.iwae import IWAEEvaluation
from lightning_gm.callbacks.run_progress import RunProgress

__all__ = ["callbacks_for", "evaluations_for"]


def evaluations_for(model: Any, configured: Sequence[pl.Callback] = ()) -> list[pl.Callback]:
    """The test evaluations ``model`` declares (checked by capability, not by class), less those of a type already
    ``configured``: a model with ``log_weights(x, n, noise)`` and an ``iw_evaluation`` (an
    :class:`~lightning_gm.estimators.seeded.IWEvaluation`, or ``None`` when it needs none) gets
    :class:`~lightning_gm.callbacks.iwae.IWAEEvaluation`, which reads the declaration at test time; a model with a
    log-partition function (``ensure_log_partition``, ``log_prob_unnormalized``) gets
    :class:`~lightning_gm.callbacks.ais.AISEvaluation` with its default bracket."""
    found: list[pl.Callback] = []
    if getattr(model, "iw_evaluation", None) is not None and callable(getattr(model, "log_weights", None)):
        found.append(IWAEEvaluation())
    if callable(getattr(model, "ensure_log_partition", None)) and callable(getattr(model, "log_prob_unnormalized", None)):
        found.append(AISEvaluation())
    return [cb for cb in found if not any(isinstance(c, type(cb)) for c in configured)]


def callbacks_for(model: Any, configured: Sequence[pl.Callback] = ()) -> list[pl.Callback]:
    """Every callback ``model`` calls for: :class:`RunProgress` and :func:`evaluations_for` (less the types already
    ``configured``)."""
    return [cb for cb in [RunProgress(), *evaluations_for(model)] if not any(isinstance(c, type(cb)) for c in configured)]

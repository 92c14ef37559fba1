"""The shared progress bar is the interruption point of long evaluations."""

from __future__ import annotations

import pytest

from lightning_gm.progress import ProgressBar, trainer_progress


def test_bar_raises_the_stop_error_once_asked_and_not_before():
    flag = {"stop": False}
    calls = []
    bar = ProgressBar("x", enabled=False, should_stop=lambda: flag["stop"], stop_error=lambda: RuntimeError("stopped"))
    for step in range(1, 4):
        bar(step, 10)
        calls.append(step)
    flag["stop"] = True
    with pytest.raises(RuntimeError, match="stopped"):
        bar(4, 10)
    assert calls == [1, 2, 3]


def test_trainer_progress_raises_lightnings_sigterm_exception():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class FakeTrainer:
        is_global_zero = True
        progress_bar_callback = None
        received_sigterm = False

    trainer = FakeTrainer()
    bar = trainer_progress(trainer, "AIS", unit="beta")
    assert not bar.enabled  # no progress bar callback: nothing drawn
    bar(100, 1000)
    trainer.received_sigterm = True
    with pytest.raises(SIGTERMException):
        bar(200, 1000)


def test_relative_updates_accumulate():
    bar = ProgressBar("x", enabled=False)
    bar.update(3)
    bar.update(4)
    assert bar.seen == 7

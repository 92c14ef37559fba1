"""One progress bar for every long evaluation (AIS, IWAE, decoder AIS, ...), which is also its interruption point.

The estimators in :mod:`lightning_gm.estimators` report progress through a plain hook ``progress(step, total)``
and know nothing of Lightning. :class:`ProgressBar` is such a hook: it draws a tqdm bar (or nothing) and, on
every call, asks ``should_stop()``; when that says yes it raises ``stop_error()``. :func:`trainer_progress`
builds one for a running Lightning trainer: the bar shows on rank 0 when the trainer shows a progress bar,
and a SIGTERM (which Lightning only records, in ``trainer.received_sigterm``, and acts on between batches)
stops the evaluation at its next progress tick with Lightning's own ``SIGTERMException``, which the trainer
handles like a SIGTERM between batches (callbacks' ``on_exception``, teardown, exit). SIGINT needs nothing:
Python raises ``KeyboardInterrupt`` at once.

An estimator that runs for long must therefore call its hook every few hundred milliseconds of work.
"""

from __future__ import annotations

import sys

from typing import Any, Callable, Optional

__all__ = ["ProgressBar", "trainer_progress"]


class ProgressBar:
    """A ``progress(step, total)`` hook that draws a tqdm bar and raises when asked to stop.

    Args:
        desc: the bar's label.
        enabled: draw the bar (``False``: only the stop check runs).
        unit: the unit of ``step`` shown by the bar (``beta``, ``ex``, ...).
        should_stop: asked on every call; when it returns true, ``stop_error()`` is raised.
        stop_error: the exception to raise (default ``KeyboardInterrupt``).
    """

    def __init__(self, desc: str, enabled: bool = True, unit: str = "step",
                 should_stop: Optional[Callable[[], bool]] = None,
                 stop_error: Optional[Callable[[], BaseException]] = None) -> None:
        self.desc, self.enabled, self.unit = desc, enabled, unit
        self.should_stop, self.stop_error = should_stop, stop_error
        self.bar: Any = None
        self.seen = 0

    def __call__(self, step: int, total: Optional[int] = None) -> None:
        """Set the position to ``step`` of ``total`` (absolute, as the estimators' hooks report it)."""
        self.check()
        if not self.enabled:
            self.seen = step
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            # in a log file (no terminal) every redraw stays: one every 30 s instead of ten a second
            interval = 0.1 if sys.stderr.isatty() else 30.0
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False, dynamic_ncols=True,
                            mininterval=interval)
        elif total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(step - self.seen)
        self.seen = step

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` (relative)."""
        self(self.seen + n, self.bar.total if self.bar is not None else None)

    def check(self) -> None:
        """Raise ``stop_error()`` if ``should_stop()`` says so."""
        if self.should_stop is not None and self.should_stop():
            self.close()
            raise (self.stop_error() if self.stop_error is not None else KeyboardInterrupt())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def trainer_progress(trainer: Any, desc: str, unit: str = "step", enabled: bool = True) -> ProgressBar:
    """A :class:`ProgressBar` for an evaluation inside a running Lightning ``trainer`` (``None``: no trainer,
    a bar and no stop check): drawn on rank 0 when the trainer shows a progress bar; a SIGTERM the trainer
    received stops it with Lightning's ``SIGTERMException``."""
    if trainer is None:
        return ProgressBar(desc, enabled=enabled, unit=unit)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    shown = enabled and bool(getattr(trainer, "is_global_zero", True)) \
        and getattr(trainer, "progress_bar_callback", None) is not None
    return ProgressBar(desc, enabled=shown, unit=unit,
                       should_stop=lambda: bool(getattr(trainer, "received_sigterm", False)),
                       stop_error=SIGTERMException)

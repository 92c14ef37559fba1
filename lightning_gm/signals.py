"""Stopping cleanly on SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's time limit), in every phase.

Inside a running Lightning trainer the two signals already end in an exception that the trainer handles
(callbacks' ``on_exception``, which writes ``last.ckpt`` and the run's status, then teardown): Python raises
``KeyboardInterrupt`` for SIGINT at once, and Lightning records a SIGTERM and raises its ``SIGTERMException``
at the next batch, or at the next progress tick of a long evaluation (:mod:`lightning_gm.progress`).
Outside a trainer (reading data, building the model, between fit and test, a sweep waiting for its trial),
SIGTERM would kill the process on the spot. :func:`install` puts one handler on both signals that

* records which signal came first (:func:`received`), so the status and the exit code can say it;
* raises :class:`Stopped` (a ``KeyboardInterrupt``) where no trainer is watching, so SIGTERM stops like Ctrl-C;
* leaves a SIGTERM to Lightning while a trainer runs (Lightning registers its own handler and calls this one
  after it: the loop stops at its next check);
* ignores any further signal while the process is stopping, so a second Ctrl-C (or a sweep forwarding the
  signal its trial already got) cannot cut the checkpoint or the summary short.

Only the standard library is imported here: the command installs this before anything heavy is loaded.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

__all__ = ["Stopped", "install", "restore", "received", "signal_name", "exit_code", "stop_signal_of"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: Optional[int] = None
_previous: dict[int, Any] = {}
_depth = 0  # install() may nest (the sweep runs the command in-process to read its base config)


class Stopped(KeyboardInterrupt):
    """Raised by the handler where no trainer is watching; ``signum`` is the signal that stopped the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """``"SIGINT"``, ``"SIGTERM"``, ..."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handler(signum: int, frame: Any) -> None:
    global _received
    first = _received is None
    if first:
        _received = signum
    if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is not _handler:
        return  # a trainer's own handler called this one: its loop stops at its next check
    if first:
        raise Stopped(signum)
    # a second signal while stopping: let the checkpoint and the summary be written


def install() -> None:
    """Handle SIGINT and SIGTERM as described above (main thread only; a no-op elsewhere). Calls nest: each
    :func:`install` is undone by one :func:`restore`, the outermost one putting back the original handlers."""
    global _received, _depth
    if threading.current_thread() is not threading.main_thread():
        return
    _depth += 1
    if _depth > 1:
        return
    _received = None
    for sig in STOP_SIGNALS:
        _previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _handler)


def restore() -> None:
    """Undo one :func:`install`; the outermost puts back the handlers that were there before."""
    global _depth
    if threading.current_thread() is not threading.main_thread() or _depth == 0:
        return
    _depth -= 1
    if _depth:
        return
    for sig, handler in list(_previous.items()):
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    _previous.clear()


def received() -> Optional[str]:
    """The name of the first stop signal received since :func:`install`, or ``None``."""
    return signal_name(_received) if _received is not None else None


def stop_signal_of(exception: BaseException) -> Optional[str]:
    """The signal an exception stands for: ``"SIGINT"`` / ``"SIGTERM"`` for an interruption (Ctrl-C, this
    module's :class:`Stopped`, Lightning's ``SIGTERMException``), ``None`` for an error."""
    if isinstance(exception, Stopped):
        return signal_name(exception.signum)
    if type(exception).__name__ == "SIGTERMException":  # Lightning's, without importing Lightning here
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return received() or "SIGINT"
    return None


def exit_code(name: Optional[str]) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    try:
        return 128 + signal.Signals[name].value if name else 1
    except KeyError:
        return 1

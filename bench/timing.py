"""Timing helpers for the bench scripts: contenders timed interleaved, so that a machine whose speed drifts by
10-30% within a minute (shared 2-core VMs) slows them alike, and reported as medians and per-round ratios.

    from timing import interleaved, report
    times = interleaved({"platform": f, "bare loop": g}, repeats=3)
    report(times, reference="bare loop")
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

__all__ = ["interleaved", "report", "timed"]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(contenders: Mapping[str, Callable[[], object]], repeats: int = 3,
                warmup: bool = False) -> dict[str, list[float]]:
    """Seconds per call of every contender, ``repeats`` rounds, each round calling every contender once in turn.

    Args:
        contenders: name -> zero-argument callable.
        repeats: rounds.
        warmup: call every contender once before timing (caches, allocator, lazy imports).
    """
    if warmup:
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn)[0])
    return times


def report(times: Mapping[str, list[float]], reference: str, unit: float = 1.0, unit_name: str = "s") -> str:
    """A markdown table: best and median time of each contender (divided by ``unit``) and its per-round ratio to
    ``reference`` (median [min, max])."""
    ref = times[reference]
    lines = [f"| contender | best ({unit_name}) | median ({unit_name}) | ratio to {reference}, median [min, max] |",
             "| --- | --- | --- | --- |"]
    for name, ts in times.items():
        ratios = [t / r for t, r in zip(ts, ref)]
        lines.append(f"| {name} | {min(ts) / unit:.3f} | {statistics.median(ts) / unit:.3f} | "
                     f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}] |")
    return "\n".join(lines)

"""Timing helpers for the bench scripts: contenders timed interleaved, so that a machine whose speed drifts by
10-30% within a minute (shared 2-core VMs) slows them alike, and reported as medians and per-round ratios.
Every timing script in ``bench/`` takes its options and its clock from here (run it as ``python bench/<script>.py``:
the script's folder is on ``sys.path``, so ``import timing`` finds this file):

    from timing import interleaved, parse, parser, report
    p = parser(__doc__)                      # --threads (torch intra-op threads) and --repeats
    args = parse(p)                          # parses and sets the threads
    times = interleaved({"platform": f, "bare loop": g}, repeats=args.repeats)
    print(report(times, reference="bare loop"))

``per_call`` times one function in blocks of calls; ``rounds`` interleaves contenders that measure themselves
(e.g. a training loop that returns its seconds per step after a warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence, TypeVar

__all__ = ["interleaved", "report", "timed", "rounds", "per_call", "parser", "parse"]

T = TypeVar("T")


def parser(doc: str, threads: int = 1, repeats: Optional[int] = 3) -> argparse.ArgumentParser:
    """An argument parser (described by the first line of ``doc``) with the options of every timing script:
    ``--threads``, torch's intra-op threads (set by :func:`parse`), and unless ``repeats`` is ``None``,
    ``--repeats``, the interleaved rounds."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--threads", type=int, default=threads, help="torch intra-op threads (0 = torch's default)")
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats, help="interleaved timing rounds")
    return p


def parse(p: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``p.parse_args(argv)``, then torch's intra-op threads set to ``--threads`` (left alone at 0)."""
    import torch

    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return args


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def per_call(fn: Callable[[], object], calls: int = 1, repeats: int = 1, warmup: int = 0) -> list[float]:
    """Seconds per call of ``fn``: ``repeats`` blocks of ``calls`` calls each (one value per block: the block's
    time over ``calls``), after ``warmup`` untimed calls. Take the ``min`` (least disturbed) or the median."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - start) / calls)
    return out


def rounds(contenders: Mapping[str, Callable[[], T]], repeats: int = 3) -> dict[str, list[T]]:
    """What every contender returns, ``repeats`` rounds, each round calling every contender once in turn (so a
    change in the machine's load hits all of them alike): for contenders that time themselves."""
    out: dict[str, list[T]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            out[name].append(fn())
    return out


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
    return rounds({name: (lambda fn=fn: timed(fn)[0]) for name, fn in contenders.items()}, repeats)


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

"""Shared plumbing of the peer comparisons (``bench/peers/*.py``): run the platform and a peer side by side for
the same wall-clock budget, then score both with the platform's estimator on the same test images.

Run by hand, never in CI. Every comparison:

* launches the two trainings at the same time, each in its own process with ``OMP_NUM_THREADS=1`` (and MKL's),
  so both see the same machine load for the same budget;
* scores both trained models with *this platform's* estimator (exact flow NLL, AIS, IWAE-k) on the same evenly
  spaced test images;
* reports the per-example paired difference ``nll_here - nll_peer`` (negative: the platform is better) with its
  standard error ``sd(d) / sqrt(n)``: both models are scored on the same images, so the image-to-image spread,
  which dwarfs the difference, cancels.

Each script imports this module (``import common``: the script's own folder is on ``sys.path``) and follows
one shape: :func:`parser` for the shared options, :func:`train_both` for the side-by-side training (the script
itself re-run with ``--peer-only`` as the peer side), :func:`load_here` for the platform's model, then its own
scoring, :func:`paired`, :func:`record` and :func:`write_result`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "evenly_spaced", "paired", "run_side_by_side", "fit_command", "machine", "hms", "seconds",
           "best_checkpoint", "record", "write_result", "parser", "train_both", "load_here"]


def evenly_spaced(total: int, n: int) -> torch.Tensor:
    """``n`` evenly spaced indices in ``range(total)`` (all of them when ``n >= total``)."""
    if n >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, n).round().long()


def paired(nll_here: torch.Tensor, nll_peer: torch.Tensor) -> dict[str, float]:
    """Means and standard errors of two per-example NLLs on the same examples, and of their difference."""
    here, peer = nll_here.double(), nll_peer.double()
    d = here - peer
    n = len(d)
    se = lambda t: float(t.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
    return {"n": n, "nll_here": float(here.mean()), "se_here": se(here), "nll_peer": float(peer.mean()),
            "se_peer": se(peer), "diff": float(d.mean()), "diff_se": se(d)}


def seconds(budget: str) -> float:
    """``DD:HH:MM:SS`` or ``HH:MM:SS`` or a number of seconds -> seconds."""
    parts = [float(p) for p in str(budget).split(":")]
    if len(parts) == 1:
        return parts[0]
    factors = [86400, 3600, 60, 1][-len(parts):]
    return sum(p * f for p, f in zip(parts, factors))


def hms(sec: float) -> str:
    """Seconds -> Lightning's ``DD:HH:MM:SS``."""
    sec = int(round(sec))
    return f"{sec // 86400:02d}:{sec % 86400 // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    return env  # the data root is the caller's $LIGHTNING_GM_DATA (or the platform's default)


def fit_command(config: str, budget_s: float, runs_dir: Path, run_name: str, extra: Sequence[str] = ()) -> list[str]:
    """``lightning_gm fit`` of a shipped config for ``budget_s`` seconds of training (then its own test)."""
    return [sys.executable, "-m", "lightning_gm", "fit", "--config", str(ROOT / config), f"--runs_dir={runs_dir}",
            f"--run_name={run_name}", f"--trainer.max_time={hms(budget_s)}", "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu", *extra]


def run_side_by_side(commands: dict[str, list[str]], logs: Path) -> dict[str, dict[str, Any]]:
    """Start every command at once (one thread each), wait for all; returns return codes and wall times."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, files, start = {}, {}, time.time()
    for name, cmd in commands.items():
        files[name] = open(logs / f"{name}.log", "w")
        files[name].write(" ".join(cmd) + "\n")
        files[name].flush()
        procs[name] = subprocess.Popen(cmd, stdout=files[name], stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
    out = {}
    for name, proc in procs.items():
        code = proc.wait()
        files[name].close()
        out[name] = {"returncode": code, "wall_s": time.time() - start, "log": str(logs / f"{name}.log")}
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}); see {logs / f'{name}.log'}")
    return out


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint of a platform run folder."""
    found = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise SystemExit(f"no best-*.ckpt in {run_dir / 'checkpoints'}")
    return found[-1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at scoring"


def record(family: str, peer: str, budget_s: float, estimator: str, stats: dict[str, float],
           sides: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A comparison's ``result.json``: what was compared, for how long, scored how, on which machine, the
    :func:`paired` statistics, the two trainings' records (:func:`train_both`) and the script's own ``extra``."""
    return {"family": family, "peer": peer, "budget_s": budget_s, "estimator": estimator, "machine": machine(),
            **stats, "sides": sides, **extra}


def write_result(out: Path, result: dict[str, Any], family: str, peer: str, here_cell: str, peer_cell: str,
                 estimator: str) -> None:
    """Write ``out/result.json`` and print its row of the ``bench/RESULTS.md`` table
    ``| family | peer | budget | here | peer | here - peer | estimator |`` (the budget and the paired difference
    with its standard error from ``result``; the other cells as given)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    cells = [family, peer, f"{result['budget_s'] / 60:.0f} min", here_cell, peer_cell,
             f"{result['diff']:+.2f} +- {result['diff_se']:.2f}", estimator]
    print("| " + " | ".join(cells) + " |")


def parser(doc: str, examples: int) -> argparse.ArgumentParser:
    """The options every comparison takes (``--budget``, ``--examples``, ``--out``, ``--score-only``, and the
    internal ``--peer-only`` by which a script runs its own peer side); the script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--budget", default="00:00:15:00", help="training wall time of each side, DD:HH:MM:SS")
    p.add_argument("--examples", type=int, default=examples, help="evenly spaced test images scored")
    p.add_argument("--out", default=None, help="result folder (default runs/peers/<script>[/<model>])")
    p.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out")
    return p


def train_both(script: str, config: str, budget_s: float, out: Path, here_extra: Sequence[str] = (),
               peer_args: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Train both sides at once for ``budget_s``: the platform's ``config`` (:func:`fit_command`, run ``here`` in
    ``out``) and ``script --peer-only`` with ``peer_args``; logs in ``out/logs``. Returns :func:`run_side_by_side`'s
    record."""
    return run_side_by_side({
        "here": fit_command(config, budget_s, out, "here", here_extra),
        "peer": [sys.executable, script, "--peer-only", f"--budget={budget_s}", f"--out={out}", *peer_args],
    }, out / "logs")


def load_here(out: Path, config: str):
    """The platform's trained model of :func:`train_both` (its best checkpoint), in eval mode, one thread."""
    import lightning_gm

    torch.set_num_threads(1)
    return lightning_gm.load_model(best_checkpoint(out / Path(config).stem / "here")).eval()

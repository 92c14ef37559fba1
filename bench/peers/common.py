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
"""

from __future__ import annotations

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
           "best_checkpoint", "write_result"]


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
    env.setdefault("LIGHTNING_GM_DATA", "/work/shared/data")
    return env


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


def write_result(out: Path, result: dict[str, Any], row: Optional[str] = None) -> None:
    """Write ``result.json`` (and print the Markdown table row)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    if row:
        print(row)

r"""Hopfield capacity experiment: retrieval rate against the load :math:`\alpha = P/N` of random patterns.

For each load, ``P = round(alpha N)`` random spin patterns are stored with the Hebbian rule
(:class:`lightning_gm.nn.hopfield.HopfieldNetwork`) and the asynchronous dynamics are started from every stored
pattern (and from cues with ``--noise`` of the bits flipped). A pattern counts as retrieved when the fixed point
reached has overlap :math:`m = s^\top\xi/N \ge` ``--overlap`` (0.9; below capacity the retrieval state of Amit,
Gutfreund & Sompolinsky has :math:`m > 0.96`). The table also gives the fraction of patterns that are exact
fixed points (which vanishes much earlier, at :math:`P \sim N / (2\ln N)`) and the mean final overlap.

The curve breaks down near :math:`\alpha_c \approx 0.138` (smoothed at finite ``N``). It is written to
``docs/hopfield_capacity.png`` with the 0.138 line, and the table is printed as markdown.

Usage::

    OMP_NUM_THREADS=1 python bench/hopfield_capacity.py            # N = 500, 5 networks per load
    OMP_NUM_THREADS=1 python bench/hopfield_capacity.py --n 1000 --trials 3 --out runs/capacity.png

References:
    Hopfield (1982); Amit, Gutfreund & Sompolinsky (1985), Storing infinite numbers of patterns in a spin-glass
    model of neural networks, PRL 55; MacKay (2003), ITILA, section 42.7 (capacity).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lightning_gm.images import save_figure
from lightning_gm.nn.hopfield import HopfieldNetwork, corrupt, overlap

__all__ = ["capacity_table", "main"]

ALPHA_C = 0.138
ROOT = Path(__file__).resolve().parents[1]


def capacity_table(n: int, loads: list[float], trials: int, noise: float, min_overlap: float, seed: int,
                   max_sweeps: int = 100) -> list[dict[str, float]]:
    """One row per load: retrieval rates from the patterns and from noisy cues, fixed points, mean overlaps."""
    rows = []
    for alpha in loads:
        p = max(1, round(alpha * n))
        acc = {"from_pattern": 0.0, "from_cue": 0.0, "fixed": 0.0, "m_pattern": 0.0, "m_cue": 0.0, "sweeps": 0.0}
        for t in range(trials):
            g = torch.Generator().manual_seed(seed * 1_000_003 + t * 7919 + p)
            xi = torch.where(torch.rand(p, n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
            net = HopfieldNetwork(n, dtype=torch.float64)
            net.store(xi)
            acc["fixed"] += float((net.sync_step(xi) == xi).all(-1).double().mean())
            for key, start in (("pattern", xi), ("cue", corrupt(xi, noise, g))):
                run = net.run(start, "async", max_sweeps, g)
                m = overlap(run.state, xi)
                acc[f"from_{key}"] += float((m >= min_overlap).double().mean())
                acc[f"m_{key}"] += float(m.mean())
                acc["sweeps"] += run.sweeps / 2
        rows.append({"alpha": alpha, "P": p, **{k: v / trials for k, v in acc.items()}})
    return rows


def plot(rows: list[dict[str, float]], path: Path, n: int, trials: int, noise: float, min_overlap: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = [r["alpha"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(a, [r["from_pattern"] for r in rows], "o-", label=f"retrieved from the pattern ($m \\geq {min_overlap}$)")
    ax.plot(a, [r["from_cue"] for r in rows], "s-", label=f"retrieved from a {noise:.0%}-corrupted cue")
    ax.plot(a, [r["fixed"] for r in rows], "^--", color="grey", label="exact fixed point")
    ax.axvline(ALPHA_C, color="red", ls=":", label=r"$\alpha_c \approx 0.138$")
    ax.set_xlabel(r"load $\alpha = P / N$")
    ax.set_ylabel("fraction of stored patterns")
    ax.set_title(f"Hopfield capacity, N = {n}, {trials} networks per load", fontsize=10)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of units N")
    parser.add_argument("--loads", type=float, nargs="+",
                        default=[0.02, 0.05, 0.08, 0.10, 0.12, 0.13, 0.14, 0.15, 0.16, 0.18, 0.20, 0.25])
    parser.add_argument("--trials", type=int, default=5, help="independent networks per load")
    parser.add_argument("--noise", type=float, default=0.1, help="flip probability of the corrupted cues")
    parser.add_argument("--overlap", type=float, default=0.9, help="overlap from which a pattern counts as retrieved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "hopfield_capacity.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    rows = capacity_table(args.n, args.loads, args.trials, args.noise, args.overlap, args.seed)
    print(f"| alpha = P/N | P | retrieved from pattern | retrieved from {args.noise:.0%} cue | exact fixed points "
          f"| mean m (pattern) | mean m (cue) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['alpha']:.3f} | {r['P']} | {r['from_pattern']:.3f} | {r['from_cue']:.3f} | {r['fixed']:.3f} "
              f"| {r['m_pattern']:.3f} | {r['m_cue']:.3f} |")
    path = plot(rows, args.out, args.n, args.trials, args.noise, args.overlap)
    print(f"\nN = {args.n}, {args.trials} networks per load, asynchronous updates; wrote {path} "
          f"({path.stat().st_size // 1024} KB) in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

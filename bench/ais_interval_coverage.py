"""Coverage of the reported AIS interval (issue 17) on an RBM small enough to enumerate: over many seeds and
schedules from 3 to 3,000 steps (ESS from ~2 to ~90 of 100 runs), how often does log Z +- 3 s.e. contain the exact
log Z, for the reported s.e. (the largest of the delta-method, replicate and ESS standard errors) and for the
delta-method interval of Salakhutdinov & Murray alone (whose lower end is -inf when 3 s.e. >= 1)?

The model: a 64-20 RBM trained by 600 PCD-1 steps on binarised 8x8 digits (as in tests/estimators/conftest.py).

    OMP_NUM_THREADS=1 python bench/ais_interval_coverage.py --seeds 60
"""

from __future__ import annotations

import argparse
import math
import statistics

import sys
from pathlib import Path

import torch

from lightning_gm.estimators.ais import ais_log_partition, base_rate_log_odds
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.estimators.rbm_ais import RBMAnnealingPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: the tests' trained model
from tests.estimators.conftest import train_digits_rbm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=60)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--steps", type=int, nargs="+", default=[3, 5, 10, 30, 100, 1000, 3000])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rbm, x = train_digits_rbm()
    exact = log_partition_enumerate(rbm)
    path = RBMAnnealingPath(rbm, base_rate_log_odds(x))
    print(f"exact log Z = {exact:.4f}; {args.runs} runs, {args.seeds} seeds per schedule\n")
    print("| steps | ESS (median) | error of log Z: mean, sd over seeds | reported interval: covers, median width "
          "| delta-method interval: covers, lower end -inf |")
    print("| --- | --- | --- | --- | --- |")
    for steps in args.steps:
        errors, ess, widths, covered, covered_delta, infinite = [], [], [], 0, 0, 0
        for seed in range(args.seeds):
            res = ais_log_partition(path, args.runs, steps, generator=torch.Generator().manual_seed(1000 + seed))
            lo, hi = res.log_z_interval
            covered += lo <= exact <= hi
            d = res.delta_stderr
            d_lo = res.log_z + math.log1p(-3 * d) if 3 * d < 1 else -math.inf
            covered_delta += d_lo <= exact <= res.log_z + math.log1p(3 * d)
            infinite += 3 * d >= 1
            errors.append(res.log_z - exact)
            ess.append(res.effective_sample_size)
            widths.append(hi - lo)
        n = args.seeds
        print(f"| {steps:,} | {statistics.median(ess):.1f} | {statistics.mean(errors):+.3f}, {statistics.stdev(errors):.3f} | "
              f"{covered}/{n}, {statistics.median(widths):.2f} | {covered_delta}/{n}, {infinite}/{n} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

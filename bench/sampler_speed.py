"""Cost of the Bernoulli draws of a Gibbs step: the platform's sampler against torch's, and what it buys AIS.

* per draw, at the 784-500 RBM's shapes (a batch of 100: 100 x 500 hidden and 100 x 784 visible units), in
  float32 (training) and float64 (AIS): ``torch.bernoulli(p)``, ``torch.rand(...) < p`` and
  :func:`lightning_gm.nn.rbm.bernoulli` (a NumPy PCG64DXSM fill seeded from the torch generator, then ``u < p``);
* AIS on a 784-500 RBM, ``--ais-runs`` x ``--ais-steps``, with the platform's sampler and with torch's
  uniform draws (the NumPy path switched off), interleaved, best of ``--repeats``.

Run: ``python bench/sampler_speed.py [--threads 1] [--repeats 5] [--ais-runs 100] [--ais-steps 2000]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

import lightning_gm.nn.rbm as rbm_nn
import lightning_gm.nn.sampling as sampling

__all__ = ["main"]


def _per_call_ms(fn: Callable[[], object], calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return 1e3 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--ais-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}; ms per draw, best of {args.repeats} x 200 calls")
    print("| draw | torch.bernoulli | torch.rand < p | nn.rbm.bernoulli |")
    print("| --- | --- | --- | --- |")
    for dtype in (torch.float32, torch.float64):
        for shape in ((100, 500), (100, 784)):
            p = torch.rand(shape, generator=g, dtype=dtype)
            row = [_per_call_ms(f, 200, args.repeats) for f in (
                lambda: torch.bernoulli(p, generator=g),
                lambda: torch.rand(p.shape, generator=g, dtype=dtype).lt_(p),
                lambda: rbm_nn.bernoulli(p, g),
            )]
            print(f"| {shape[0]} x {shape[1]}, {str(dtype).removeprefix('torch.')} | "
                  + " | ".join(f"{t:.3f}" for t in row) + " |")

    from lightning_gm.estimators.ais import ais_log_partition
    from lightning_gm.estimators.rbm_ais import RBMAnnealingPath

    rbm = rbm_nn.BernoulliRBM(784, 500)
    with torch.no_grad():
        rbm.W.normal_(0, 0.01, generator=g)
    numpy_min = sampling.NUMPY_UNIFORM_MIN
    times: dict[str, list[float]] = {"platform sampler": [], "torch.rand draws": []}
    for _ in range(args.repeats):
        for name, threshold in (("platform sampler", numpy_min), ("torch.rand draws", 2**62)):
            sampling.NUMPY_UNIFORM_MIN = threshold
            start = time.perf_counter()
            ais_log_partition(RBMAnnealingPath(rbm), args.ais_runs, args.ais_steps, generator=torch.Generator().manual_seed(1))
            times[name].append(time.perf_counter() - start)
    sampling.NUMPY_UNIFORM_MIN = numpy_min
    print(f"\nAIS {args.ais_runs} runs x {args.ais_steps} betas, best of {args.repeats}:")
    for name, ts in times.items():
        print(f"  {name}: {min(ts):.2f} s ({1e3 * min(ts) / args.ais_steps:.2f} ms / step)")


if __name__ == "__main__":
    main()

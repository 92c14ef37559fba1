"""Cost of the Bernoulli draws of a Gibbs step: the platform's sampler against torch's, and what it buys AIS.

* per draw, at the 784-500 RBM's shapes (a batch of 100: 100 x 500 hidden and 100 x 784 visible units), in
  float32 (training) and float64 (AIS): ``torch.bernoulli(p)``, ``torch.rand(...) < p`` and
  :func:`lightning_gm.nn.rbm.bernoulli` (a NumPy PCG64DXSM fill seeded from the torch generator, then ``u < p``);
* AIS on a 784-500 RBM, ``--ais-runs`` x ``--ais-steps``, with the platform's sampler and with torch's
  uniform draws (the NumPy path switched off), interleaved, best of ``--repeats``.

Run: ``python bench/sampler_speed.py [--threads 1] [--repeats 5] [--ais-runs 100] [--ais-steps 2000]``.
"""

from __future__ import annotations

import torch

import lightning_gm.nn.rbm as rbm_nn
import lightning_gm.nn.sampling as sampling
from timing import interleaved, parse, parser, per_call

__all__ = ["main"]


def main() -> None:
    p = parser(__doc__, repeats=5)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=2000)
    args = parse(p)
    g = torch.Generator().manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}; ms per draw, best of {args.repeats} x 200 calls")
    print("| draw | torch.bernoulli | torch.rand < p | nn.rbm.bernoulli |")
    print("| --- | --- | --- | --- |")
    for dtype in (torch.float32, torch.float64):
        for shape in ((100, 500), (100, 784)):
            p = torch.rand(shape, generator=g, dtype=dtype)
            row = [1e3 * min(per_call(f, calls=200, repeats=args.repeats)) for f in (
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

    def ais_with(threshold: int):  # the sampler's switch to NumPy draws; 2**62: never (torch.rand throughout)
        def run() -> None:
            sampling.NUMPY_UNIFORM_MIN = threshold
            ais_log_partition(RBMAnnealingPath(rbm), args.ais_runs, args.ais_steps, generator=torch.Generator().manual_seed(1))
        return run

    try:
        times = interleaved({"platform sampler": ais_with(numpy_min), "torch.rand draws": ais_with(2**62)}, args.repeats)
    finally:
        sampling.NUMPY_UNIFORM_MIN = numpy_min
    print(f"\nAIS {args.ais_runs} runs x {args.ais_steps} betas, best of {args.repeats}:")
    for name, ts in times.items():
        print(f"  {name}: {min(ts):.2f} s ({1e3 * min(ts) / args.ais_steps:.2f} ms / step)")


if __name__ == "__main__":
    main()

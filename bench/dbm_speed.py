"""Time per joint-training step (and per MNIST epoch) of the DBM, and of a short AIS run.

Joint step = mean-field positive phase (``mf_iterations`` rounds, tol 1e-7) + ``gibbs_steps`` odd/even
sweeps of ``num_chains`` persistent chains + backward + SGD step, on random binary batches of 100
(the cost does not depend on the data). An MNIST epoch is 500 such steps (50k training images).

Usage:
    OMP_NUM_THREADS=1 python bench/dbm_speed.py --hidden 500 1000 --steps 20
"""

from __future__ import annotations

import statistics

import torch

from timing import parse, parser, per_call, timed

from lightning_gm.estimators.ais import AISSchedule
from lightning_gm.models import DBM

__all__: list[str] = []


def main() -> None:
    p = parser(__doc__, repeats=None)
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 1000])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--mf_iterations", type=int, default=30)
    p.add_argument("--ais_steps", type=int, default=200)
    args = parse(p)
    torch.manual_seed(0)
    m = DBM(data_shape=(784,), hidden=args.hidden, epochs_per_layer=[0] * len(args.hidden),
            mf_iterations=args.mf_iterations, mf_tol=1e-7, num_chains=100, gibbs_steps=5,
            ais=AISSchedule(steps=args.ais_steps, exact_max_units=0))
    m._init_chains()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    x = torch.bernoulli(torch.full((100, 784), 0.13))

    def train_step() -> None:
        loss = m.loss_terms(x, "train")["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step = statistics.median(per_call(train_step, repeats=args.steps, warmup=2))
    print(f"hidden={args.hidden} threads={args.threads}: {step:.3f} s/step (median of {args.steps}), "
          f"{500 * step / 60:.1f} min per 50k-image epoch")
    ais, _ = timed(m.compute_log_partition)
    print(f"AIS 100 runs x {args.ais_steps} steps: {ais:.1f} s -> x 14500 steps: {ais * 14500 / args.ais_steps / 60:.1f} min")


if __name__ == "__main__":
    main()

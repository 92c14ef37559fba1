r"""AIS test log-likelihood of a trained :class:`~lightning_gm.models.conv_rbm.ConvRBM` with a chosen schedule.

:math:`\log p(v) = -F(v) - \log\hat Z` with the closed-form free energy and forward AIS from the training data's
base-rate model (:class:`~lightning_gm.estimators.conv_rbm.ConvRBMAnnealingPath`); prints
:math:`\log\hat Z`, its standard error and effective sample size, and the mean test NLL. Forward AIS
under-estimates :math:`\log Z` in expectation, so the NLL is optimistic; a growing :math:`\log\hat Z` with the
number of steps means the schedule is still too short.

Usage::

    OMP_NUM_THREADS=1 python bench/conv_rbm_ais.py --ckpt RUN/checkpoints/best-epoch=005.ckpt --runs 64 --steps 3000

References: Salakhutdinov & Murray (2008); Lee, Grosse, Ranganath & Ng (2009).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="AIS test NLL of a trained ConvRBM")
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from lightning_gm.data import MNISTDataModule
    from lightning_gm.estimators.ais import ais_log_partition
    from lightning_gm.estimators.conv_rbm import ConvRBMAnnealingPath
    from lightning_gm.models.conv_rbm import ConvRBM

    model = ConvRBM.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    dm = MNISTDataModule(binarize="dynamic", flatten=False, eval_batch_size=1000)
    dm.setup("test")
    with torch.no_grad():
        fe = torch.cat([model.rbm.free_energy(x.reshape(-1, *model.image)).double()
                        for x, _ in dm.test_dataloader()])
    print(f"test set: {fe.numel()} images, mean free energy {float(fe.mean()):.3f}")
    print("| AIS runs | steps | log Z | std err | ESS | test NLL (nats) | wall |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        t = time.time()
        g = torch.Generator().manual_seed(args.seed)
        res = ais_log_partition(ConvRBMAnnealingPath(model.rbm, model.ais_base), args.runs, steps, generator=g)
        print(f"| {args.runs} | {steps} | {res.log_z:.2f} | {res.log_z_stderr:.2f} | "
              f"{res.effective_sample_size:.1f} | {float(fe.mean()) + res.log_z:.2f} | {time.time() - t:.0f} s |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The importance-weighted test estimate of a trained sigmoid belief net as a function of ``k``, on ``--n``
evenly spaced test images of binarised MNIST (Larochelle & Murray; the test file is ordered by digit, so a
prefix is not representative), with the platform's seeded per-example
evaluation (:func:`lightning_gm.estimators.seeded.seeded_importance_weighted`, the one ``IWAEEvaluation``
uses), so each row is reproducible and the rows share their first samples' seeds.

.. math::

    \\hat{\\mathcal L}_k(x) = \\log \\frac1k \\sum_{j=1}^k \\frac{p(x, h_j)}{q(h_j \\mid x)} \\uparrow \\log p(x)
    \\quad (k \\to \\infty),

so the NLL column falls with ``k`` towards the model's true NLL.

    OMP_NUM_THREADS=1 python bench/sbn_eval.py --ckpt RUN/checkpoints/best-*.ckpt --n 500 --ks 10 100 1000 5000

References: Burda, Grosse & Salakhutdinov (2016); Bornschein & Bengio (2015).
"""

from __future__ import annotations

import argparse
import glob
import math
import time

import torch

from lightning_gm.data import BinarizedMNISTDataModule
from lightning_gm.estimators.seeded import seeded_importance_weighted
from lightning_gm.models import SigmoidBeliefNet

__all__ = ["main"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint path (glob allowed)")
    ap.add_argument("--n", type=int, default=500, help="number of evenly spaced test images (10000 = all)")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000, 5000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = sorted(glob.glob(args.ckpt))[-1]
    model = SigmoidBeliefNet.load_from_checkpoint(path, map_location="cpu").eval()
    dm = BinarizedMNISTDataModule(download=False)
    dm.setup("test")
    test = dm.splits["test"][0]
    idx = torch.arange(0, len(test), max(1, len(test) // args.n))[: args.n]
    x = test[idx].flatten(1).float()
    print(f"{path}: {model.hparams.training}, hidden {list(model.hparams.hidden)}, {len(x)} test images "
          f"(every {max(1, len(test) // args.n)}th)")
    print("| k | test NLL (nats) | s.e. | seconds |\n| --- | --- | --- | --- |")
    for k in args.ks:
        start = time.time()
        est = seeded_importance_weighted(model.log_weights, x, idx.tolist(), k, args.seed)
        nll = -est.log_prob
        print(f"| {k} | {float(nll.mean()):.2f} | {float(nll.std() / math.sqrt(len(x))):.2f} | {time.time() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()

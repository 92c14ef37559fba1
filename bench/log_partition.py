"""log Z of a trained energy model's checkpoint with a chosen AIS schedule, and the test NLL it implies.

    OMP_NUM_THREADS=1 python bench/log_partition.py <checkpoint or run folder> --runs 1000 [--steps 14500] [--seed 1]

For a second, larger forward estimate beside a run's test (e.g. when its ESS is under 10% of the runs or its
RAISE bracket is inverted), without the bracket's cost: the model is loaded with ``lightning_gm.load_model``, its
``ais`` group replaced, ``ensure_log_partition()`` run once, and the test images of the run's data protocol
(MNIST, the fixed seeded binarisation of the test set) scored by ``log_prob_unnormalized``. Prints one JSON line:
log Z, its s.e. and +-3 s.e. interval, the ESS, the test NLL and the seconds the AIS took.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lightning_gm import load_model
from lightning_gm.data import MNISTDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint, or a run folder (its best checkpoint)")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's ais.steps")
    parser.add_argument("--seed", type=int, default=1, help="AIS seed (the test's own estimate used ais.seed, 0 by default)")
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    model.ais = model.ais.replace(runs=args.runs, seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    start = time.time()
    lp = model.ensure_log_partition()
    seconds = time.time() - start
    dm = MNISTDataModule(binarize="dynamic", val_size=10000, eval_batch_size=1000)
    dm.setup("test")
    with torch.no_grad():
        values = torch.cat([model.log_prob_unnormalized(b[0] if isinstance(b, (list, tuple)) else b).double()
                            for b in dm.test_dataloader()])
    print(json.dumps({"runs": model.ais.runs, "steps": model.ais.steps, "seed": model.ais.seed, "log_z": lp.log_z,
                      "stderr": lp.stderr, "interval": list(lp.interval), "ess": float(lp.effective_sample_size),
                      "test_examples": len(values), "test_nll": lp.log_z - float(values.mean()),
                      "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()

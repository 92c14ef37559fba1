"""The equal-budget table of the VAE family: trained run folders scored by one evaluator on the same test images.

Every run is scored by the platform's seeded IWAE estimator
(:func:`lightning_gm.estimators.seeded.seeded_importance_weighted`, the protocol of
:class:`~lightning_gm.estimators.seeded.IWEvaluation`: k samples per example, seed 0, blocks of 10 x 500) on the same
evenly spaced test images of dynamically binarised MNIST (the DataModule's fixed binarisation of the test set),
from the run's ``last.ckpt`` (the state after its budget). The first-epoch validation ELBO comes from the run's
``metrics.csv``. Runs trained by older code load too (flat hyperparameters are folded into the groups).

    python bench/vae_equal_budget.py --k 5000 --examples 1000 \\
        before/vae=runs/before/vae/vae after/vae=runs/after/vae/vae ...

Train the runs first (5 epochs each, see bench/RESULTS.md for the commands).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Optional

import torch

__all__ = ["first_epoch_elbo", "score", "main"]


def first_epoch_elbo(run: Path) -> Optional[float]:
    """``val/elbo`` after the first epoch, from the run's ``metrics.csv``."""
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    for row in csv.DictReader(path.open()):
        if row.get("val/elbo") and row.get("epoch") == "0":
            return float(row["val/elbo"])
    return None


def score(run: Path, x: torch.Tensor, indices: torch.Tensor, k: int, seed: int = 0) -> tuple[float, float]:
    """``(NLL, standard error)`` of the run's ``last.ckpt`` on the examples ``x`` (dataset indices ``indices``)."""
    import lightning_gm
    from lightning_gm.estimators.seeded import IWEvaluation, seeded_importance_weighted

    model = lightning_gm.load_model(run / "checkpoints" / "last.ckpt").eval()
    ev = IWEvaluation(test_k=k, seed=seed)
    with torch.no_grad():
        lp = seeded_importance_weighted(model.log_weights, x, indices.tolist(), k, ev.seed, ev.block,
                                        ev.sample_block).log_prob
    return float(-lp.mean()), float(lp.std() / math.sqrt(len(lp)))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="name=run_folder pairs")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--examples", type=int, default=1000, help="evenly spaced test images (of 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lightning_gm.data import MNISTDataModule
    from lightning_gm.estimators.seeded import evenly_spaced

    dm = MNISTDataModule(binarize="dynamic", val_size=10000)
    dm.setup()
    test = dm.splits["test"][0].float()
    indices = evenly_spaced(len(test), args.examples)
    x = test[indices]
    print(f"iwae-{args.k} on {len(indices):,} of {len(test):,} test images (evenly spaced), seed {args.seed}")
    print(f"| run | first-epoch val ELBO | test NLL (nats) |\n|---|---|---|")
    for pair in args.runs:
        name, folder = pair.split("=", 1)
        run = Path(folder)
        nll, se = score(run, x, indices, args.k, args.seed)
        elbo = first_epoch_elbo(run)
        print(f"| {name} | {elbo:.2f} | {nll:.2f} +- {se:.2f} |" if elbo is not None else
              f"| {name} | - | {nll:.2f} +- {se:.2f} |", flush=True)


if __name__ == "__main__":
    main()

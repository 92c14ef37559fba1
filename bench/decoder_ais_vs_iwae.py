"""Decoder AIS (Wu et al. 2017) against the IWAE bound on the same MNIST test examples, for a trained VAE.

Loads a VAE checkpoint (default: the 10-minute ``conf/vae.yaml`` run of ``bench/mnist_vae_iwae.sh``), takes the
first ``--examples`` images of the MNIST test set exactly as the test loop sees them (``conf/vae.yaml``'s data:
dynamic binarisation, fixed seeded noise on the test set), and computes per example

* the IWAE bound with ``k`` = ``--iwae_k`` samples, seeded exactly as ``IWAEEvaluation`` (``eval_seed`` 0), so the
  numbers are the per-example terms of the run's ``test/nll``;
* the decoder-AIS estimate for every schedule in ``--steps`` (``--chains`` chains, ``--leapfrog`` leapfrog steps),
  using the VAE's own Bernoulli decoder and its N(0, I) prior (:func:`decoder_log_likelihood_fn`).

Both are stochastic lower bounds of ``log p(x)``: the larger (smaller NLL) is the tighter. Prints a markdown table
(mean NLL, standard error, the paired difference AIS - IWAE with its standard error, wall time).

    OMP_NUM_THREADS=1 nice -n 5 python bench/decoder_ais_vs_iwae.py --examples 100 --steps 300 1000

References: Wu, Burda, Salakhutdinov & Grosse (2017); Burda, Grosse & Salakhutdinov (2016).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from lightning_gm.callbacks.decoder_ais import decoder_log_likelihood_fn
from lightning_gm.estimators.hmc import frozen_parameters
from lightning_gm.data import MNISTDataModule
from lightning_gm.estimators.decoder_ais import HMCAnnealing, decoder_ais_log_prob
from lightning_gm.estimators.seeded import example_generator, seeded_importance_weighted
from lightning_gm.models.vae import VAE

__all__ = ["main"]

DEFAULT_CKPT = "runs/vae/budget-00001000/checkpoints/best-epoch=019.ckpt"


def _stats(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=DEFAULT_CKPT)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--iwae_k", type=int, default=5000)
    p.add_argument("--steps", type=int, nargs="+", default=[1000])
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--step_size", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=100, help="examples annealed at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="", help="write a PNG of the paired AIS - IWAE difference against the steps")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    model = VAE.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    dm = MNISTDataModule(binarize="dynamic", batch_size=100, eval_batch_size=500, val_size=10000)
    dm.prepare_data()
    dm.setup("test")
    dataset = dm.test_dataloader().dataset
    x = torch.stack([dataset[i][0] for i in range(args.examples)]).flatten(1)
    idx = list(range(args.examples))
    print(f"checkpoint {args.ckpt}; {args.examples} test examples; latent_dim {model.latent_dim}; "
          f"{type(model.likelihood).__name__}")

    rows = []
    t = time.time()
    with torch.no_grad():
        iw = seeded_importance_weighted(model.log_weights, x, idx, args.iwae_k, seed=0)
    iw_nll = -iw.log_prob
    rows.append((f"IWAE k={args.iwae_k}", *_stats(iw_nll), 0.0, 0.0, time.time() - t, float("nan")))
    print(rows[-1], flush=True)

    ll = decoder_log_likelihood_fn(model, "model")
    for steps in args.steps:
        t = time.time()
        lps, acc = [], []
        with frozen_parameters(model):
            for j, start in enumerate(range(0, args.examples, args.batch)):
                annealing = HMCAnnealing(chains=args.chains, steps=steps, leapfrog_steps=args.leapfrog,
                                         step_size=args.step_size, seed=args.seed)
                res = decoder_ais_log_prob(ll, x[start : start + args.batch], model.latent_dim, annealing,
                                           generator=example_generator(args.seed, j))
                lps.append(res.log_prob)
                acc.append(res.accept_rate)
        nll = -torch.cat(lps)
        diff = nll - iw_nll.double()
        rows.append((f"AIS {args.chains} chains x {steps} steps x {args.leapfrog} leapfrog", *_stats(nll),
                     *_stats(diff), time.time() - t, sum(acc) / len(acc)))
        print(rows[-1], flush=True)

    if args.plot:
        _plot(rows, args)
    print("\n| estimator | test NLL (nats) | stderr | AIS - IWAE (paired) | stderr | seconds | HMC accept |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, m, s, d, ds, sec, a in rows:
        print(f"| {name} | {m:.2f} | {s:.2f} | {d:+.2f} | {ds:.2f} | {sec:.0f} | {a:.2f} |")


def _plot(rows: list[tuple], args: argparse.Namespace) -> None:
    """Mean paired difference AIS - IWAE (nats, with +-2 standard errors) against the number of AIS steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_gm.images import save_figure

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.errorbar(args.steps, [r[3] for r in rows[1:]], yerr=[2 * r[4] for r in rows[1:]], marker="o", capsize=3,
                label=f"decoder AIS ({args.chains} chains, {args.leapfrog} leapfrog)")
    ax.axhline(0.0, color="k", lw=1, ls="--", label=f"IWAE k={args.iwae_k}")
    ax.set_xscale("log")
    ax.set_xlabel("AIS steps (sigmoidal schedule)")
    ax.set_ylabel("NLL(AIS) - NLL(IWAE), nats")
    ax.set_title(f"MNIST VAE, {args.examples} test examples", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.plot)


if __name__ == "__main__":
    main()

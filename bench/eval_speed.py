"""Evaluation at the speed of its arithmetic: the platform's evaluators against bare PyTorch loops doing the same
arithmetic, timed in one run (speed is compared as ratios within a run; absolute times depend on the machine's
load). One sub-command per evaluator:

    python bench/eval_speed.py iwae --threads 2                       # IWAE k = 5000 on all 10,000 test images
    python bench/eval_speed.py iwae --threads 2 --examples 1000 --k 5000 --ckpt runs/vae/<run>/checkpoints/last.ckpt

``iwae``: the shipped VAE (``conf/vae.yaml``'s 784-200-200-50 tanh network; a checkpoint if given, else fresh
weights: the cost does not depend on them) on dynamically binarised MNIST test images, three ways:

* ``bare``: a plain loop, 10 images per call, chunks of 500 samples, global random stream: encoder once per call,
  then per chunk ``z = mu + sigma * eps``, the model's own decoder and likelihood, ``log p(z) - log q(z|x)``, a
  running ``logsumexp`` (the same decoder arithmetic as the platform, none of its bookkeeping);
* ``estimator``: :func:`lightning_gm.estimators.seeded.seeded_importance_weighted` with the model's evaluation
  protocol (per-example seeded noise, blocks of 10 examples x 500 samples);
* ``test``: the whole ``Trainer.test`` the command runs (the test loop's bound terms, the IWAE evaluation with
  its posterior means and active units, the gather, the logging).

Each reports seconds and its ratio to ``bare``, timed by ``bench/timing.py``'s :func:`timed` (other parts,
e.g. ``ais``, add a sub-command that uses it).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from timing import parse, parser, timed

__all__ = ["iwae_bare", "iwae_estimator", "iwae_test", "main"]


def report(rows: list[tuple[str, float]], reference: str, what: str) -> None:
    """Print ``name  seconds  ratio to the reference`` for each row."""
    ref = dict(rows)[reference]
    print(f"{what}")
    for name, seconds in rows:
        print(f"  {name:<10} {seconds:9.1f} s   {seconds / ref:5.2f} x {reference}")


# --- IWAE ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def iwae_bare(model: Any, x: torch.Tensor, k: int, per_call: int = 10, chunk: int = 500) -> torch.Tensor:
    """The plain loop (see the module docstring): ``(N,)`` k-sample bounds, global random stream."""
    out = []
    L = model.latent_dim
    for lo in range(0, len(x), per_call):
        xb = x[lo : lo + per_call].flatten(1)
        mu, log_var = model.encode(xb)
        std = torch.exp(0.5 * log_var)
        lse = torch.full((len(xb),), -math.inf, dtype=torch.float64)
        for first in range(0, k, chunk):
            n = min(chunk, k - first)
            eps = torch.randn(n, len(xb), L)
            z = mu + std * eps
            log_px = model.likelihood.log_prob(xb, model.decoder(z))
            log_pz = -0.5 * (z * z).sum(-1) - 0.5 * L * math.log(2 * math.pi)
            log_qz = -0.5 * (eps * eps).sum(-1) - torch.log(std).sum(-1) - 0.5 * L * math.log(2 * math.pi)
            lse = torch.logaddexp(lse, torch.logsumexp((log_px + log_pz - log_qz).double(), 0))
        out.append(lse - math.log(k))
    return torch.cat(out)


@torch.no_grad()
def iwae_estimator(model: Any, x: torch.Tensor, k: int) -> torch.Tensor:
    """The platform's seeded, batched estimator with the model's protocol: ``(N,)``."""
    from lightning_gm.estimators.seeded import seeded_importance_weighted

    ev = model.evaluation
    return seeded_importance_weighted(model.log_weights, x, range(len(x)), k, ev.seed, ev.block,
                                      ev.sample_block).log_prob


def iwae_test(model: Any, x: torch.Tensor, k: int) -> dict[str, float]:
    """The whole ``Trainer.test`` with the evaluation the command attaches."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_gm.callbacks.registry import evaluations_for

    model.evaluation = type(model.evaluation)(**{**model.evaluation.__dict__, "test_k": k})
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=evaluations_for(model))
    return trainer.test(model, DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=500), verbose=False)[0]


def _vae(ckpt: str | None) -> Any:
    from lightning_gm.models import VAE

    if ckpt:
        import lightning_gm

        return lightning_gm.load_model(ckpt).eval()
    torch.manual_seed(0)
    return VAE(latent_dim=50, hidden=(200, 200), activation="tanh", init="xavier_uniform").eval()


def run_iwae(args: argparse.Namespace) -> None:
    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(binarize="dynamic", val_size=10000)
    dm.setup()
    x = dm.splits["test"][0][: args.examples].float()
    model = _vae(args.ckpt)
    parts = ["bare", *[p for p in ("estimator", "test") if p in args.parts.split(",")]]
    fns = {"bare": iwae_bare, "estimator": iwae_estimator, "test": iwae_test}
    seconds = dict.fromkeys(parts, 0.0)
    sums = dict.fromkeys(parts, 0.0)
    # the parts take turns on consecutive slices, so that a change of the machine's load hits them alike
    for piece in x.split(max(10, -(-len(x) // args.rounds) // 10 * 10)):
        for part in parts:
            torch.manual_seed(0)
            dt, out = timed(lambda: fns[part](model, piece, args.k))
            seconds[part] += dt
            sums[part] += (float(-out["test/nll"]) if isinstance(out, dict) else float(out.mean())) * len(piece)
    report(list(seconds.items()), "bare", f"IWAE k={args.k} on {len(x):,} test images, "
           f"{torch.get_num_threads()} thread(s), {args.rounds} interleaved rounds")
    print("  mean log-likelihood bound: " + ", ".join(f"{p} {v / len(x):.3f}" for p, v in sums.items()))


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, threads=2, repeats=None)  # the machine has 2 cores
    sub = p.add_subparsers(dest="command", required=True)
    iwae = sub.add_parser("iwae", help="IWAE-k of the shipped VAE: bare loop, estimator, whole test")
    iwae.add_argument("--examples", type=int, default=10_000)
    iwae.add_argument("--k", type=int, default=5000)
    iwae.add_argument("--ckpt", default=None, help="a trained conf/vae.yaml checkpoint (default: fresh weights)")
    iwae.add_argument("--parts", default="estimator,test", help="which platform paths to time besides bare")
    iwae.add_argument("--rounds", type=int, default=4,
                      help="the parts take turns on this many slices of the images (each test round pays a Trainer start)")
    iwae.set_defaults(run=run_iwae)
    args = parse(p, argv)
    args.run(args)


if __name__ == "__main__":
    main()

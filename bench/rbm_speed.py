"""Speed of the 784-500 Bernoulli RBM (batch 100, CD-1) against scikit-learn and a bare PyTorch loop, and
the wall time of AIS with the literature schedule (100 runs x 14,500 betas).

Three trainers on the same binarised MNIST training set (50,000 x 784), each timed for one epoch
(500 updates) in the same process, alternating, best of ``--repeats``:

* ``lightning_gm``: :class:`lightning_gm.models.RBM` (CD-1, ``persistent=false``) in a Lightning
  ``Trainer`` with the platform's DivergenceGuard and RNGStateCheckpoint callbacks and its batched data
  loader (no logger, no checkpoint, no validation): the platform's real training step, including the
  ``recon_error`` monitor on the logged steps (``log_every_n_steps=50``);
* the same with ``update_batch_size=100`` and a loader batch of 1,000: every loaded batch is split into
  ten consecutive CD updates of 100 (the same 100 updates per epoch), so Lightning's per-step cost is paid
  once per ten updates;
* ``bare torch``: the same arithmetic by hand (a shuffled batch, ``v -> h -> v' -> h'`` and the
  outer-product update with momentum), no autograd, no Lightning, sampling with ``torch.bernoulli``;
* ``bare torch, u < p sampler``: the same loop drawing its Bernoulli samples the way the platform does
  (:func:`lightning_gm.nn.rbm.bernoulli`, a uniform draw and a comparison): the difference to
  ``lightning_gm`` is then Lightning's per-step cost alone;
* ``scikit-learn``: ``sklearn.neural_network.BernoulliRBM.partial_fit`` on the same batches (which is
  PCD-1 with one Gibbs step per update: the same cost as CD-1), in float32 like the others and with its BLAS
  limited to the same number of threads.

Run: ``python bench/rbm_speed.py [--threads N] [--repeats R] [--ais-runs 100 --ais-steps 14500]``.
Results are appended to bench/RESULTS.md by hand (with the machine and the command).

References: Hinton (2010), A practical guide to training RBMs; Salakhutdinov & Murray (2008) (AIS schedule).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

__all__ = ["main"]


def _data(n: int) -> torch.Tensor:
    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(binarize="static", batch_size=100)
    dm.setup()
    return dm.splits["train"][0][:n].reshape(-1, 784).contiguous()


def bare_torch_epoch(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, lr: float = 0.05,
                     momentum: float = 0.5, batch: int = 100, sample: Callable = torch.bernoulli) -> None:
    """One epoch of CD-1 with momentum, by hand (the arithmetic of the model's training step)."""
    dW, db, dc = torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)
    order = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        v0 = x[order[i : i + batch]]
        ph0 = torch.sigmoid(v0 @ W + c)
        h0 = sample(ph0)
        v1 = sample(torch.sigmoid(h0 @ W.T + b))
        ph1 = torch.sigmoid(v1 @ W + c)
        n = v0.shape[0]
        gW = (v0.T @ ph0 - v1.T @ ph1) / n
        dW.mul_(momentum).add_(gW)
        db.mul_(momentum).add_((v0 - v1).mean(0))
        dc.mul_(momentum).add_((ph0 - ph1).mean(0))
        W.add_(dW, alpha=lr)
        b.add_(db, alpha=lr)
        c.add_(dc, alpha=lr)


def lightning_epoch(x: torch.Tensor, load_batch: int = 100) -> Callable[[], None]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_gm.callbacks import DivergenceGuard, RNGStateCheckpoint
    from lightning_gm.data.modules import BatchDataset, _batch_collate
    from lightning_gm.models import RBM

    model = RBM(data_shape=(784,), n_hidden=500, persistent=False, k=1, weight_cost=0.0, init_visible_bias=False,
                momentum_warmup_epochs=0, optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5),
                update_batch_size=100 if load_batch > 100 else None)
    # recon_error is a monitor computed every step; it is part of the platform's step, so it stays in
    # the platform's loader: one indexing operation per batch (MNISTDataModule serves batches the same way)
    loader = DataLoader(BatchDataset(x, torch.zeros(len(x))), batch_size=load_batch, shuffle=True,
                        collate_fn=_batch_collate)

    def run() -> None:
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             num_sanity_val_steps=0, log_every_n_steps=50,
                             callbacks=[DivergenceGuard(), RNGStateCheckpoint()])
        trainer.fit(model, loader)

    return run


def sklearn_epoch(x: np.ndarray) -> Callable[[], None]:
    from sklearn.neural_network import BernoulliRBM

    rbm = BernoulliRBM(n_components=500, learning_rate=0.05, batch_size=100, random_state=0)

    def run() -> None:
        for i in range(0, len(x), 100):
            rbm.partial_fit(x[i : i + 100])

    return run


def _bare_threads(fn: Callable[[], None]) -> Callable[[], None]:
    """scikit-learn's BLAS gets as many threads as torch (threadpoolctl ships with scikit-learn)."""
    from threadpoolctl import threadpool_limits

    def run() -> None:
        with threadpool_limits(limits=torch.get_num_threads()):
            fn()

    return run


def _best(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=50000)
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--ais-steps", type=int, default=14500)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import lightning.pytorch as pl

    from lightning_gm.nn.rbm import bernoulli

    pl.seed_everything(0, verbose=False)
    x = _data(args.examples)
    W, b, c = torch.randn(784, 500) * 0.01, torch.zeros(784), torch.zeros(500)
    trainers = {
        "lightning_gm RBM (Trainer, fused CD step)": lightning_epoch(x),
        "lightning_gm RBM, 10 updates of 100 per loaded batch of 1000": lightning_epoch(x, 1000),
        "bare torch loop": lambda: bare_torch_epoch(x, W, b, c),
        "bare torch loop, u < p sampler": lambda: bare_torch_epoch(x, W, b, c, sample=bernoulli),
        "scikit-learn BernoulliRBM": _bare_threads(sklearn_epoch(x.numpy().astype(np.float32))),
    }
    times = {name: [] for name in trainers}
    for _ in range(args.repeats):  # interleaved, so machine load hits every trainer alike
        for name, fn in trainers.items():
            times[name].append(_best(fn, 1))
    best = {k: min(v) for k, v in times.items()}
    ref = best["lightning_gm RBM (Trainer, fused CD step)"]
    print(f"epoch = {len(x)} examples, batch 100, CD-1, 784-500, torch threads {torch.get_num_threads()}")
    print("| trainer | s / epoch (best of %d) | ratio to lightning_gm |" % args.repeats)
    print("| --- | --- | --- |")
    for name, t in best.items():
        print(f"| {name} | {t:.2f} | {t / ref:.2f} |")

    from lightning_gm.estimators.ais import ais_log_partition
    from lightning_gm.nn.rbm import BernoulliRBM

    rbm = BernoulliRBM(784, 500)
    with torch.no_grad():
        rbm.W.copy_(W)
        rbm.b.copy_(b)
        rbm.c.copy_(c)
    t = time.perf_counter()
    res = ais_log_partition(rbm, n_runs=args.ais_runs, betas=args.ais_steps, generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - t
    print(f"\nAIS {args.ais_runs} runs x {args.ais_steps} betas (float64): {wall:.1f} s "
          f"({1e3 * wall / args.ais_steps:.2f} ms / step), log Z = {res.log_z:.2f} +- {res.log_z_std_error:.3f}")


if __name__ == "__main__":
    main()

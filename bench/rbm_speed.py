"""Speed of the 784-500 Bernoulli RBM (batch 100, CD-1) against scikit-learn and a bare PyTorch loop, and
the wall time of AIS with the literature schedule (100 runs x 14,500 betas).

Trainers, all on the same statically binarised MNIST training examples (all 50,000 x 784 by default), 784-500,
CD-1, batches of 100, SGD with momentum 0.5:

* ``lightning_gm``: :class:`lightning_gm.models.RBM` (CD-1, ``persistent=false``) in a Lightning
  ``Trainer`` with the platform's DivergenceGuard and RNGStateCheckpoint callbacks and its batched data
  loader (no logger, no checkpoint, no validation): the platform's real training step, including the
  ``recon_error`` monitor on the logged steps (``log_every_n_steps=50``); once with ``update_batch_size=100``
  and a loader batch of 1,000 (``conf/rbm.yaml``: every loaded batch is split into ten consecutive updates of
  100, so Lightning's per-batch cost is paid once per ten updates), once with one update per loaded batch of 100;
* ``bare torch`` (:class:`BareCD`): the same arithmetic by hand (a shuffled batch, ``v -> h -> v' -> h'`` and
  the outer-product update with momentum), no autograd, no Lightning, sampling with ``torch.bernoulli``;
* ``bare torch with the platform's sampler``: the same loop drawing its Bernoulli samples the way the platform
  does (:func:`lightning_gm.nn.rbm.bernoulli`: a uniform draw from NumPy's PCG64DXSM seeded by the torch
  generator, and a comparison): the difference to ``lightning_gm`` is then the framework's per-update cost
  alone (Lightning's optimiser step and hooks, ``torch.optim``, the model's bookkeeping);
* ``scikit-learn``: ``sklearn.neural_network.BernoulliRBM.fit`` with ``n_iter=1`` (its own epoch loop over
  batches of 100; PCD-1 with one Gibbs step per update: the same 5 matrix products as CD-1), its BLAS limited
  to the same number of threads, twice: on float32 data (``fit`` keeps float32, the others' precision) and on
  float64 data (what ``partial_fit`` always computes in: it casts its input to float64, so a float32
  comparison has to go through ``fit``).

The platform and the bare loops take turns every loaded batch inside one multi-epoch fit (:func:`batch_windows`):
a shared machine's load, which drifts over seconds, then hits them alike, and the table gives each one's total
time per update and the median ratio over the windows. scikit-learn's epochs (and the platform's, each in a
fresh ``Trainer``) alternate round by round.

Run: ``python bench/rbm_speed.py [--threads N] [--repeats R] [--ais-runs 100 --ais-steps 14500]``.
Results are appended to bench/RESULTS.md by hand (with the machine and the command).

References: Hinton (2010), A practical guide to training RBMs; Salakhutdinov & Murray (2008) (AIS schedule).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from timing import interleaved, parse, parser, per_call, timed

__all__ = ["main"]


def _data(n: int) -> torch.Tensor:
    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(binarize="static", batch_size=100)
    dm.setup()
    return dm.splits["train"][0][:n].reshape(-1, 784).contiguous()


class BareCD:
    """CD-1 with momentum by hand (the arithmetic of the model's training step): a shuffled batch,
    ``v -> h -> v' -> h'`` and the outer-product update; no autograd, no Lightning."""

    def __init__(self, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, lr: float = 0.05,
                 momentum: float = 0.5, batch: int = 100, sample: Callable = torch.bernoulli) -> None:
        self.x, self.W, self.b, self.c, self.lr, self.momentum, self.batch, self.sample = x, W, b, c, lr, momentum, batch, sample
        self.dW, self.db, self.dc = torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)
        self.order, self.pos = torch.randperm(len(x)), 0

    def update(self) -> None:
        if self.pos >= len(self.x):
            self.order, self.pos = torch.randperm(len(self.x)), 0
        v0 = self.x[self.order[self.pos : self.pos + self.batch]]
        self.pos += self.batch
        W, b, c, sample = self.W, self.b, self.c, self.sample
        ph0 = torch.sigmoid(v0 @ W + c)
        h0 = sample(ph0)
        v1 = sample(torch.sigmoid(h0 @ W.T + b))
        ph1 = torch.sigmoid(v1 @ W + c)
        n = v0.shape[0]
        gW = (v0.T @ ph0 - v1.T @ ph1) / n
        self.dW.mul_(self.momentum).add_(gW)
        self.db.mul_(self.momentum).add_((v0 - v1).mean(0))
        self.dc.mul_(self.momentum).add_((ph0 - ph1).mean(0))
        W.add_(self.dW, alpha=self.lr)
        b.add_(self.db, alpha=self.lr)
        c.add_(self.dc, alpha=self.lr)

    def epoch(self) -> None:
        for _ in range(-(-len(self.x) // self.batch)):
            self.update()


def _platform(x: torch.Tensor, load_batch: int, n_hidden: int = 500) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader

    from lightning_gm.data.modules import BatchDataset, batch_collate
    from lightning_gm.models import RBM
    from lightning_gm.models.momentum import MomentumWarmup
    from lightning_gm.nn.rbm import CD, Penalties

    model = RBM(data_shape=(x.shape[1],), n_hidden=n_hidden, cd=CD(k=1, persistent=False), penalties=Penalties(weight_cost=0.0),
                init_visible_bias=False, momentum=MomentumWarmup(epochs=0),
                optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5),
                update_batch_size=100 if load_batch > 100 else None)
    # the platform's batched loader: one indexing operation per loaded batch (MNISTDataModule serves them so)
    loader = DataLoader(BatchDataset(x, torch.zeros(len(x))), batch_size=load_batch, shuffle=True,
                        collate_fn=batch_collate)
    return model, loader


def _trainer(epochs: int, callbacks: list) -> Any:
    import lightning.pytorch as pl

    from lightning_gm.callbacks import DivergenceGuard, RNGStateCheckpoint

    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, log_every_n_steps=50,
                      callbacks=[DivergenceGuard(), RNGStateCheckpoint(), *callbacks])


def lightning_epoch(x: torch.Tensor, load_batch: int = 100) -> Callable[[], None]:
    """One epoch of the platform in a fresh ``Trainer`` (its set-up included)."""
    model, loader = _platform(x, load_batch)
    return lambda: _trainer(1, []).fit(model, loader)


def batch_windows(x: torch.Tensor, load_batch: int, bares: dict[str, BareCD], epochs: int,
                  n_hidden: int = 500) -> dict[str, list[float]]:
    """The platform's fit and the bare loops take turns every loaded batch: after each batch of the fit, every
    bare loop makes as many updates as the platform just made, so all of them run in the same time windows
    (a few tens of milliseconds) and a shared machine's load hits them alike. The platform's window runs from
    the end of one batch to the end of the next: it holds the loader, Lightning's per-batch hooks and the
    updates. Returns each trainer's seconds per window."""
    import lightning.pytorch as pl

    updates = max(1, load_batch // 100)
    times: dict[str, list[float]] = {"lightning_gm": [], **{name: [] for name in bares}}

    class Interleave(pl.Callback):
        resume = 0.0

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.resume = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            times["lightning_gm"].append(time.perf_counter() - self.resume)
            for name, bare in bares.items():
                times[name].append(updates * per_call(bare.update, calls=updates)[0])
            self.resume = time.perf_counter()

    model, loader = _platform(x, load_batch, n_hidden)
    _trainer(epochs, [Interleave()]).fit(model, loader)
    return times


def sklearn_epoch(x: np.ndarray) -> Callable[[], None]:
    from sklearn.neural_network import BernoulliRBM

    def run() -> None:
        BernoulliRBM(n_components=500, learning_rate=0.05, batch_size=100, n_iter=1, random_state=0).fit(x)

    return run


def _bare_threads(fn: Callable[[], None]) -> Callable[[], None]:
    """scikit-learn's BLAS gets as many threads as torch (threadpoolctl ships with scikit-learn)."""
    from threadpoolctl import threadpool_limits

    def run() -> None:
        with threadpool_limits(limits=torch.get_num_threads()):
            fn()

    return run


def _overhead(epochs: int) -> None:
    from lightning_gm.nn.rbm import bernoulli

    x = (torch.rand(50000, 4) < 0.2).float()
    W, b, c = torch.randn(4, 2) * 0.01, torch.zeros(4), torch.zeros(2)
    bares = {"bare torch loop with the platform's sampler": BareCD(x, W, b, c, sample=bernoulli)}
    times = batch_windows(x, 1000, bares, epochs, n_hidden=2)
    n_updates = epochs * len(x) / 100
    print(f"4-2 RBM, update_batch_size=100, {epochs} epochs of {len(x)} examples, torch threads {torch.get_num_threads()}")
    for name, ts in times.items():
        print(f"{name}: {1e3 * sum(ts) / n_updates:.3f} ms / update")


def main() -> None:
    p = parser(__doc__, threads=0, repeats=5)  # --repeats: rounds of the scikit-learn comparison
    p.add_argument("--epochs", type=int, default=3, help="epochs of the interleaved platform / bare-loop comparison")
    p.add_argument("--examples", type=int, default=50000)
    p.add_argument("--ais-runs", type=int, default=100, help="0 skips the AIS timing")
    p.add_argument("--overhead", action="store_true",
                        help="only the framework's per-update cost: the interleaved comparison on a 4-2 RBM, where "
                             "the arithmetic vanishes")
    p.add_argument("--ais-steps", type=int, default=14500)
    args = parse(p)
    import lightning.pytorch as pl

    from lightning_gm.nn.rbm import bernoulli

    pl.seed_everything(0, verbose=False)
    if args.overhead:
        _overhead(args.epochs)
        return
    x = _data(args.examples)
    W, b, c = torch.randn(784, 500) * 0.01, torch.zeros(784), torch.zeros(500)
    threads = torch.get_num_threads()

    # 1. the platform against the bare loops, interleaved every loaded batch, over args.epochs epochs
    print(f"## lightning_gm against bare PyTorch: {args.epochs} epochs of {len(x)} examples, CD-1, 784-500, batch 100, "
          f"torch threads {threads}, interleaved every loaded batch")
    print("| platform setting | trainer | ms / update (total time / updates) | ratio to lightning_gm, "
          "median over windows [25%, 75%] |")
    print("| --- | --- | --- | --- |")
    for load_batch, setting in ((1000, "update_batch_size=100, loaded batches of 1,000 (conf/rbm.yaml)"),
                                (100, "one update per loaded batch of 100")):
        bares = {"bare torch loop (torch.bernoulli)": BareCD(x, W.clone(), b.clone(), c.clone()),
                 "bare torch loop with the platform's sampler": BareCD(x, W.clone(), b.clone(), c.clone(), sample=bernoulli)}
        times = batch_windows(x, load_batch, bares, args.epochs)
        ref = np.array(times["lightning_gm"])
        n_updates = args.epochs * len(x) / 100
        for name, ts in times.items():
            r = np.array(ts) / ref
            q1, med, q3 = np.percentile(r, [25, 50, 75])
            print(f"| {setting} | {name} | {1e3 * sum(ts) / n_updates:.2f} | {med:.3f} [{q1:.3f}, {q3:.3f}] |")

    # 2. scikit-learn's own epoch loop against the platform's, whole epochs interleaved round by round
    xn = x.numpy()
    trainers = {
        "lightning_gm RBM, update_batch_size=100 (an epoch in a fresh Trainer, set-up included)": lightning_epoch(x, 1000),
        "scikit-learn BernoulliRBM.fit, float32": _bare_threads(sklearn_epoch(xn.astype(np.float32))),
        "scikit-learn BernoulliRBM.fit, float64": _bare_threads(sklearn_epoch(xn.astype(np.float64))),
    }
    epochs = interleaved(trainers, args.repeats)
    ref_name = next(iter(trainers))
    ref = np.array(epochs[ref_name])
    updates = len(x) / 100
    print(f"\n## scikit-learn: epochs of {len(x)} examples, torch and BLAS threads {threads}, {args.repeats} rounds")
    print("| trainer | ms / update, best | ms / update, median | ratio to lightning_gm, median over rounds [min, max] |")
    print("| --- | --- | --- | --- |")
    for name, ts in epochs.items():
        r = np.array(ts) / ref
        print(f"| {name} | {1e3 * min(ts) / updates:.2f} | {1e3 * float(np.median(ts)) / updates:.2f} | "
              f"{np.median(r):.2f} [{r.min():.2f}, {r.max():.2f}] |")

    if not args.ais_runs:
        return
    from lightning_gm.estimators.ais import ais_log_partition
    from lightning_gm.estimators.rbm_ais import RBMAnnealingPath
    from lightning_gm.nn.rbm import BernoulliRBM

    rbm = BernoulliRBM(784, 500)
    with torch.no_grad():
        rbm.W.copy_(W)
        rbm.b.copy_(b)
        rbm.c.copy_(c)
    wall, res = timed(lambda: ais_log_partition(RBMAnnealingPath(rbm), args.ais_runs, args.ais_steps,
                                                generator=torch.Generator().manual_seed(0)))
    print(f"\nAIS {args.ais_runs} runs x {args.ais_steps} betas: {wall:.1f} s "
          f"({1e3 * wall / args.ais_steps:.2f} ms / step), log Z = {res.log_z:.2f} +- {res.log_z_stderr:.3f}")


if __name__ == "__main__":
    main()

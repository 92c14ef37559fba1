"""Lightning's training loop against a bare PyTorch loop for the same VAE, data and batch size, in one run.

Both loops train Burda's 784-200-200-50 VAE (``lightning_gm.models.VAE``, the same ``loss_terms``) with
Adam on the same dynamically binarised MNIST tensors, batch 100, for ``--steps`` steps after a warm-up.
The Lightning side is a ``Trainer`` with the platform's callbacks (DivergenceGuard, RNGStateCheckpoint)
and the logging the configs use; variants switch pieces off to locate the overhead.

    python bench/vae_overhead.py --steps 300 --threads 1

References: the Lightning docs, "Speed up model training" (profilers, logging frequency).
"""

from __future__ import annotations

import os
import time

__all__ = ["bare_loop", "lightning_loop", "main"]

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.callbacks import DivergenceGuard, RNGStateCheckpoint
from lightning_gm.models import VAE
from timing import parse, parser, rounds


def _data(n: int) -> torch.Tensor:
    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(binarize="static", download=False)
    dm.setup()
    return dm.splits["train"][0][:n].contiguous()


def bare_loop(x: torch.Tensor, steps: int, batch: int) -> float:
    """Seconds per step of ``for batch: loss = model.loss_terms(...); backward; step``."""
    torch.manual_seed(0)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loader = DataLoader(TensorDataset(x), batch_size=batch, shuffle=True)
    done, start = 0, None
    while done < steps + 20:
        for (xb,) in loader:
            if done == 20:
                start = time.perf_counter()
            loss = model.loss_terms(xb, "train")["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps + 20:
                break
    return (time.perf_counter() - start) / steps  # type: ignore[operator]


class _Timer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        self.end = time.perf_counter()


def lightning_loop(x: torch.Tensor, steps: int, batch: int, guard: bool = True, log_every: int = 50,
                   progress: bool = False, updates_per_batch: int = 1) -> float:
    """Seconds per update of ``Trainer.fit`` on the same model and data (no validation); with
    ``updates_per_batch`` > 1 the loader serves that many batches at once and the model splits them
    (``update_batch_size``)."""
    torch.manual_seed(0)
    model = VAE(update_batch_size=batch if updates_per_batch > 1 else None)
    model.optimizer_factory = lambda p: torch.optim.Adam(p, lr=1e-3)
    loader = DataLoader(TensorDataset(x), batch_size=batch * updates_per_batch, shuffle=True)
    steps = steps // updates_per_batch * updates_per_batch
    timer = _Timer(20)
    callbacks: list[pl.Callback] = [timer, RNGStateCheckpoint()]
    if guard:
        callbacks.append(DivergenceGuard())
    trainer = pl.Trainer(max_steps=steps + 20, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False,
                         log_every_n_steps=max(1, log_every // updates_per_batch), limit_val_batches=0,
                         callbacks=callbacks)
    trainer.fit(model, loader)
    return (timer.end - timer.start) / steps


def main() -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=100)
    args = parse(p)
    if args.steps < 10:
        p.error(f"--steps must be at least 10 (the 10-updates-per-loaded-batch variant times whole batches), got {args.steps}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    x = _data(args.steps * args.batch + 40 * args.batch)
    variants = {
        "bare": lambda: bare_loop(x, args.steps, args.batch),
        "lightning (guard, log every 50, no bar)": lambda: lightning_loop(x, args.steps, args.batch),
        "lightning (no guard)": lambda: lightning_loop(x, args.steps, args.batch, guard=False),
        "lightning (guard, progress bar)": lambda: lightning_loop(x, args.steps, args.batch, progress=True),
        "lightning (guard, log every step)": lambda: lightning_loop(x, args.steps, args.batch, log_every=1),
        "lightning, 10 updates per loaded batch": lambda: lightning_loop(x, args.steps, args.batch, updates_per_batch=10),
    }
    times = rounds(variants, args.repeats)  # each variant returns its own seconds per step after a warm-up
    best = {name: min(ts) for name, ts in times.items()}  # best of the interleaved repeats: the least disturbed run
    base = best["bare"]
    print(f"threads={args.threads} batch={args.batch} steps={args.steps} (best of {args.repeats})")
    for name, t in best.items():
        print(f"{name:42s} {1e3 * t:8.3f} ms/step   ratio {t / base:6.3f}")


if __name__ == "__main__":
    main()

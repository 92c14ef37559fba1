r"""Importance-weighted test evaluation of latent-variable models: ``k = 5000`` samples per test example
(Burda et al. 2016), chunked, sharded over DDP processes and gathered, with a progress bar.

At the end of the test epoch every process evaluates the test examples ``rank, rank + W, ...`` with
:func:`~lightning_gm.estimators.seeded.seeded_importance_weighted` (a generator per example index, so the
result does not depend on the number of processes), the per-example numbers are gathered, and every
process logs the same

* ``test/nll`` :math:`= -\frac1N \sum_i \hat{\mathcal L}_k(x_i)` (nats per example; estimator ``iwae-k``),
  ``test/nll_stderr`` and ``test/bpd`` (from the DataModule's ``bpd_offset`` where it has one),
* ``test/iw_elbo``: the Monte Carlo ELBO from the same samples,
* ``test/active_units`` (and ``test/active_units_<l>`` per stochastic layer when there are several):
  Burda's count of units with :math:`\operatorname{Cov}_x(\mathbb E_q[z_u]) > 10^{-2}`.

The model must provide ``log_weights(x, n, generators=...) -> (n, B)`` and may provide
``posterior_means(x, generators=...) -> list of (B, L_l)`` (for the active units).

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_gm.estimators.seeded import active_units, gather_by_index, seeded_importance_weighted, shard_indices
from lightning_gm.metrics import bits_per_dim

__all__ = ["IWAEEvaluation", "test_examples", "tested_examples"]


def test_examples(trainer: pl.Trainer) -> Any:
    """The test dataset of the running test loop (its first dataloader's dataset)."""
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    return loader.dataset


def tested_examples(trainer: pl.Trainer) -> int:
    """How many examples, from the start of the test set, the running test loop covers: all of them, or the
    first ``trainer.limit_test_batches`` batches of every process (a fraction or a count, as Lightning reads
    it). Evaluation callbacks that fetch examples themselves use it, so that a limited test evaluates the
    same examples as the loop."""
    dataset = test_examples(trainer)
    n = len(dataset)
    batches = trainer.num_test_batches
    limit = batches[0] if isinstance(batches, (list, tuple)) and batches else batches
    if not isinstance(limit, (int, float)) or math.isinf(limit):
        return n
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    batch_size = getattr(loader, "batch_size", None)
    if not batch_size:
        raise ValueError("limit_test_batches is set but the test dataloader has no batch_size: cannot tell which "
                         "examples the limited test covers; remove the limit or give the loader a batch_size")
    return min(n, int(limit) * int(batch_size) * trainer.world_size)


def _fetch(dataset: Any, idx: Tensor) -> Tensor:
    """The examples ``idx`` of ``dataset`` as one tensor (batches are ``(x, y)``)."""
    if hasattr(dataset, "__getitems__"):
        batch = dataset.__getitems__(idx.tolist())
    else:
        items = [dataset[int(i)] for i in idx]
        batch = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class IWAEEvaluation(pl.Callback):
    """Importance-weighted ``test/nll`` of a latent-variable model, equal under any number of processes.

    Args:
        k: importance samples per test example (5000 in Burda et al.).
        chunk_size: samples drawn at once (memory is set by this, whatever ``k``).
        seed: evaluation seed; example ``i`` draws from a generator seeded by ``(seed, i)``.
        batch_size: examples fetched from the dataset at a time.
        active_unit_threshold: activity above which a latent unit counts as active.
        progress: show a progress bar (rank 0, when the trainer shows one).
    """

    def __init__(self, k: int = 5000, chunk_size: int = 500, seed: int = 0, batch_size: int = 100,
                 active_unit_threshold: float = 1e-2, progress: bool = True) -> None:
        if k < 1:
            raise ValueError(f"IWAEEvaluation.k must be >= 1, got {k}")
        self.k, self.chunk_size, self.seed = k, chunk_size, seed
        self.batch_size, self.threshold, self.progress = batch_size, active_unit_threshold, progress
        self.results: dict[str, float] = {}
        self.per_example: Optional[Tensor] = None

    @property
    def estimator(self) -> str:
        return f"iwae-{self.k}"

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        """Run the evaluation on the trainer's test set, log it and return the numbers."""
        start = time.time()
        dataset = test_examples(trainer)
        n = tested_examples(trainer)  # all, or the prefix a limited test loop covers
        local = shard_indices(n, trainer.global_rank, trainer.world_size)
        bar = None
        if self.progress and trainer.is_global_zero and trainer.progress_bar_callback is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(local), desc=f"IWAE k={self.k} (rank 0 of {trainer.world_size})", unit="ex",
                       leave=False, dynamic_ncols=True)
        was_training = pl_module.training
        pl_module.eval()
        lp, elbo, means = [], [], []
        try:
            for idx in local.split(self.batch_size):
                x = _fetch(dataset, idx).to(pl_module.device)
                est, gens = seeded_importance_weighted(
                    pl_module.log_weights, x, idx.tolist(), self.k, self.chunk_size, self.seed,
                    on_example=(bar.update if bar is not None else None),  # type: ignore[arg-type]
                )
                lp.append(est.log_prob)
                elbo.append(est.elbo)
                if hasattr(pl_module, "posterior_means"):
                    per_ex = [pl_module.posterior_means(x[b : b + 1], generators=[g]) for b, g in enumerate(gens)]
                    means.append([torch.cat(layer) for layer in zip(*per_ex)])
        finally:
            pl_module.train(was_training)
            if bar is not None:
                bar.close()
        device = pl_module.device
        lp_all = gather_by_index(torch.cat(lp).double().to(device), local, n).cpu()
        elbo_all = gather_by_index(torch.cat(elbo).double().to(device), local, n).cpu()
        nll = -lp_all.mean()
        res = {
            "test/nll": float(nll),
            "test/nll_stderr": float(lp_all.std() / math.sqrt(n)) if n > 1 else 0.0,
            "test/iw_elbo": float(elbo_all.mean()),
            "test/iwae_examples": float(n),
        }
        offset = getattr(getattr(trainer, "datamodule", None), "bpd_offset", None)
        if offset is not None:
            res["test/bpd"] = float(bits_per_dim(float(nll), int(getattr(pl_module, "data_dim", 0)), offset))
        if means:
            layers = [gather_by_index(torch.cat(m).double().to(device), local, n).cpu() for m in zip(*means)]
            counts = [active_units(m, self.threshold)[0] for m in layers]
            res["test/active_units"] = float(sum(counts))
            if len(counts) > 1:
                res.update({f"test/active_units_{i + 1}": float(c) for i, c in enumerate(counts)})
        res["test/iwae_seconds"] = time.time() - start
        for key, value in res.items():
            pl_module.log(key, value, sync_dist=False)
        self.results, self.per_example = res, -lp_all
        return res

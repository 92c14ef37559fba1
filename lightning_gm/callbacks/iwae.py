r"""Importance-weighted test evaluation of latent-variable models: ``k = 5000`` samples per test example
(Burda et al. 2016), batched across examples, sharded over DDP processes and gathered, with a progress bar
that is also its interruption point.

At the end of the test epoch the examples to evaluate are fixed (every example the test loop covers, or
``subset`` evenly spaced ones, see :class:`~lightning_gm.estimators.seeded.IWEvaluation`), dealt to the processes
in blocks, and each process evaluates its blocks with
:func:`~lightning_gm.estimators.seeded.seeded_importance_weighted` (random numbers a function of (seed, example
index) only, so the numbers do not depend on the number of processes or the batch size). Every process logs the
same

* ``test/nll`` :math:`= -\frac1N \sum_i \hat{\mathcal L}_k(x_i)` (nats per example), ``test/nll_stderr`` and
  ``test/bpd`` (from the DataModule's ``bpd_offset`` where it has one), ``test/iwae_examples`` (``N``),
* ``test/iw_elbo``: the Monte Carlo ELBO from the same samples,
* ``test/active_units`` (and ``test/active_units_<l>`` per stochastic layer when there are several):
  Burda's count of units with :math:`\operatorname{Cov}_x(\mathbb E_q[z_u]) > 10^{-2}`, from posterior means
  computed once per batch of examples,

and :attr:`IWAEEvaluation.estimator` names what was computed (``iwae-5000``, ``iwae-5000 (1,000 of 10,000, evenly
spaced)``, ``iwae-5000 (first 1,000 of 10,000)``), which ``summary.json`` and W&B record.

The model must provide ``log_weights(x, n, noise) -> (n, B)`` and may provide ``posterior_means(x, noise)
-> list of (B, L_l)`` (for the active units) with ``posterior_mean_samples``; both draw their random numbers from
``noise`` (a :class:`~lightning_gm.estimators.seeded.SeededNoise`).

References: Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_gm.estimators.seeded import (
    MEANS_STREAM,
    IWEvaluation,
    SeededNoise,
    active_units,
    evenly_spaced,
    gather_by_index,
    seeded_importance_weighted,
    shard_blocks,
)
from lightning_gm.metrics import bits_per_dim
from lightning_gm.progress import trainer_progress

__all__ = ["IWAEEvaluation", "test_examples", "tested_examples", "fetch_examples"]


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


def fetch_examples(dataset: Any, idx: Tensor) -> Tensor:
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
        evaluation: the protocol (``test_k``, ``seed``, ``subset``, ``block``, ``sample_block``); ``None``: the
            model's own declaration (its ``iw_evaluation``), read at test time.
        active_unit_threshold: activity above which a latent unit counts as active.
        progress: show a progress bar (rank 0, when the trainer shows one); it is also the SIGTERM check.
    """

    def __init__(self, evaluation: Optional[IWEvaluation] = None, active_unit_threshold: float = 1e-2,
                 progress: bool = True) -> None:
        self.evaluation, self.threshold, self.progress = evaluation, active_unit_threshold, progress
        self.results: dict[str, float] = {}
        self.per_example: Optional[Tensor] = None
        self.label: Optional[str] = None

    @property
    def estimator(self) -> Optional[str]:
        """What the last evaluation computed (e.g. ``iwae-5000 (1,000 of 10,000, evenly spaced)``)."""
        return self.label

    #: ``summary.json`` takes the estimator's name from the evaluation that computed ``test/nll``
    estimator_label = estimator

    def protocol(self, pl_module: Any) -> IWEvaluation:
        ev = self.evaluation if self.evaluation is not None else getattr(pl_module, "iw_evaluation", None)
        if ev is None:
            raise ValueError(f"IWAEEvaluation: {type(pl_module).__name__} declares no iw_evaluation; give one")
        return ev

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, float]:
        """Run the evaluation on the trainer's test set, log it and return the numbers."""
        ev = self.protocol(pl_module)
        start = time.time()
        dataset = test_examples(trainer)
        total, covered = len(dataset), tested_examples(trainer)  # all, or the prefix a limited loop covers
        chosen = evenly_spaced(covered, ev.subset)  # dataset indices, in order
        m = len(chosen)
        positions = shard_blocks(torch.arange(m), ev.block, trainer.global_rank, trainer.world_size)
        batch = ev.block * max(1, 100 // ev.block)  # examples fetched at once: whole blocks (no effect on numbers)
        bar = trainer_progress(trainer, f"IWAE k={ev.test_k} (rank 0 of {trainer.world_size})", unit="ex",
                               enabled=self.progress)
        was_training = pl_module.training
        pl_module.eval()
        lp, elbo, means = [], [], []
        mean_samples = int(getattr(pl_module, "posterior_mean_samples", 1))
        try:
            done = 0
            for pos in positions.split(batch):
                idx = chosen[pos]
                x = fetch_examples(dataset, idx).to(pl_module.device)
                ids = idx.tolist()

                def tick(samples: int, _work: int, offset: int = done) -> None:
                    bar(offset + samples // ev.test_k, len(positions))

                est = seeded_importance_weighted(pl_module.log_weights, x, ids, ev.test_k, ev.seed, ev.block,
                                                 ev.sample_block, progress=tick)
                lp.append(est.log_prob)
                elbo.append(est.elbo)
                if hasattr(pl_module, "posterior_means"):  # once per block, as the pass: the same numbers anywhere
                    for lo in range(0, len(ids), ev.block):
                        blk = ids[lo : lo + ev.block]
                        noise = SeededNoise(ev.seed, blk, 0, mean_samples, ev.sample_block, pl_module.device,
                                            block=MEANS_STREAM)
                        means.append([v.double() for v in pl_module.posterior_means(x[lo : lo + ev.block], noise)])
                done += len(pos)
        finally:
            pl_module.train(was_training)
            bar.close()
        device = pl_module.device
        empty = torch.zeros(0, dtype=torch.float64, device=device)
        lp_all = gather_by_index(torch.cat(lp).to(device) if lp else empty, positions, m).cpu()
        elbo_all = gather_by_index(torch.cat(elbo).to(device) if elbo else empty, positions, m).cpu()
        nll = -lp_all.mean()
        res = {
            "test/nll": float(nll),
            "test/nll_stderr": float(lp_all.std() / math.sqrt(m)) if m > 1 else 0.0,
            "test/iw_elbo": float(elbo_all.mean()),
            "test/iwae_examples": float(m),
        }
        offset = getattr(getattr(trainer, "datamodule", None), "bpd_offset", None)
        if offset is not None:
            res["test/bpd"] = float(bits_per_dim(float(nll), int(getattr(pl_module, "data_dim", 0)), offset))
        if hasattr(pl_module, "posterior_means"):
            n_layers = len(means[0]) if means else len(pl_module.posterior_means(fetch_examples(dataset, chosen[:1])
                                                                                 .to(device)))
            layers = []
            for layer in range(n_layers):
                local = torch.cat([b[layer] for b in means]).to(device) if means else None
                if local is None:  # a process without examples still joins the gather
                    width = pl_module.posterior_means(fetch_examples(dataset, chosen[:1]).to(device))[layer].shape[-1]
                    local = torch.zeros(0, width, dtype=torch.float64, device=device)
                layers.append(gather_by_index(local, positions, m).cpu())
            counts = [active_units(layer, self.threshold)[0] for layer in layers]
            res["test/active_units"] = float(sum(counts))
            if len(counts) > 1:
                res.update({f"test/active_units_{i + 1}": float(c) for i, c in enumerate(counts)})
        res["test/iwae_seconds"] = time.time() - start
        for key, value in res.items():
            pl_module.log(key, value, sync_dist=False)
        self.results, self.per_example = res, -lp_all
        self.label = ev.label(m, total, covered if covered < total else None)
        return res

"""The base every model family shares: one ``_common_step``, optimiser injection, test NLL and bits/dim.

A family implements :meth:`GenerativeModel.loss_terms` (its training objective and the numbers to log),
:meth:`GenerativeModel.log_prob` (its test log-likelihood estimate, named by :attr:`estimator`) and
:meth:`GenerativeModel.sample`. The base logs ``f"{stage}/{name}"`` for every term, and at test time
``test/nll`` (nats per example), its standard error, ``test/bpd`` where the data gives it a meaning.

Training metrics cost little per step: every term is added to a running sum (one tensor operation) and
handed to ``self.log`` only on the steps Lightning writes (``trainer.log_every_n_steps``) as
``train/<term>_step``; the epoch means are logged once, at the end of the epoch, as ``train/<term>_epoch``
(averaged over the DDP processes). Calling ``self.log`` on every step costs ~0.1-0.4 ms on a CPU (Lightning
moves its result buffers on each call), which is 5-10% of a small model's step (``bench/vae_overhead.py``).

A family whose training step is plain "loss, backward, step" mixes in
:class:`~lightning_gm.models.manual_loop.ManualLoop` (the lean manual-optimisation loop, with its clipping as a
model argument). Saving and loading (hyperparameters that record injected modules, old checkpoints) is
:class:`~lightning_gm.models.checkpointing.RecordedHyperparameters`, the one file on Lightning's private API.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_gm.metrics import MeanStdErr, bits_per_dim
from lightning_gm.models.checkpointing import CheckpointLoadError, RecordedHyperparameters, writes_logs

__all__ = ["GenerativeModel", "CheckpointLoadError", "adam"]


def adam(params: Any) -> torch.optim.Optimizer:
    """The default optimiser of most families: Adam, learning rate 1e-3."""
    return torch.optim.Adam(params, lr=1e-3)


_adam = adam  # the name configs written before ``adam`` was public resolve (``lightning_gm.models.base._adam``)


class GenerativeModel(RecordedHyperparameters):
    """Base LightningModule of every explicit-density model.

    Args:
        data_shape: shape of one example (linked from the DataModule's ``shape`` by the CLI).
        optimizer: optimiser factory ``params -> Optimizer`` (default Adam, lr 1e-3).
        lr_scheduler: optional scheduler factory ``optimizer -> LRScheduler``.
    """

    #: model family shown on the leaderboard (``vae``, ``rbm``, ``flow``, ...)
    family: ClassVar[str] = "generative"
    #: metric that picks the best checkpoint, and whether it is minimised or maximised
    monitor: ClassVar[str] = "val/loss"
    monitor_mode: ClassVar[str] = "min"
    #: log ``train/loss`` (a family whose training loss value is only a gradient carrier turns it off)
    log_train_loss: ClassVar[bool] = True

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        optimizer: OptimizerCallable = adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.data_dim = int(math.prod(self.data_shape))
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.test_nll = MeanStdErr()
        self._train_sums: dict[str, tuple[Tensor, int]] = {}

    # --- what a family implements ---------------------------------------------------------------
    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        """Objective terms for a batch ``x``: a dict with ``"loss"`` (scalar to minimise) and any
        other scalars worth logging under ``f"{stage}/..."``."""
        raise NotImplementedError

    @property
    def estimator(self) -> str:
        """Name of the test log-likelihood estimator (``exact``, ``ais``, ``iwae-5000``, ``bound``...), as
        ``summary.json["estimator"]`` and the dashboard's ``est`` column show it.

        A family (or a configuration) with no log-likelihood estimate still names what its test reports instead,
        as ``none (<what it reports>)``: e.g. ``none (reconstruction error)`` for the autoencoder,
        ``none (retrieval metrics)`` for the Hopfield network; its :meth:`log_prob` raises ``NotImplementedError``
        and its test logs no ``test/nll``. (This base raises ``NotImplementedError``: a family must say.)"""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Per-example ``log p(x)`` (or the family's estimate of it), shape ``(B,)``."""
        raise NotImplementedError

    def sample(self, n: int) -> Tensor:
        """``n`` samples of shape ``(n, *data_shape)``."""
        raise NotImplementedError

    # --- the shared loop --------------------------------------------------------------------------
    def _common_step(self, batch: Any, stage: str) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        terms = self.loss_terms(x, stage)
        if stage == "train":
            self._log_train_terms(terms, x.shape[0])
            return terms["loss"]
        self._log_eval_terms(terms, stage, x.shape[0])
        return terms["loss"]

    def _log_eval_terms(self, terms: dict[str, Tensor], stage: str, batch_size: int) -> None:
        """Log a validation/test batch's terms as epoch means ``f"{stage}/{name}"`` (averaged over processes)."""
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in terms.items() if k != "loss"},
            on_step=False, on_epoch=True, prog_bar=False, batch_size=batch_size, sync_dist=True,
        )
        self.log(f"{stage}/loss", terms["loss"], on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)

    def is_logging_step(self) -> bool:
        """Whether Lightning writes this training step's logged values (``trainer.log_every_n_steps``): a family
        computes monitors that cost extra work only on such steps."""
        return writes_logs(self._trainer)

    def _log_train_terms(self, terms: dict[str, Tensor], batch_size: int) -> None:
        """Add the step's terms to the epoch sums; hand them to the loggers on the steps that are written."""
        for key, value in terms.items():
            if key == "loss" and not self.log_train_loss:
                continue
            value = value.detach()
            if key in self._train_sums:
                total, count = self._train_sums[key]
                self._train_sums[key] = (total.add_(value, alpha=batch_size), count + batch_size)
            else:
                self._train_sums[key] = (value * batch_size, batch_size)
        if self._trainer is None or not self.is_logging_step():
            return
        self.log_dict({f"train/{k}_step": v.detach() for k, v in terms.items() if k != "loss"},
                      on_step=True, on_epoch=False, batch_size=batch_size)
        if self.log_train_loss:
            self.log("train/loss_step", terms["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training terms (``train/<term>_epoch``, averaged over processes)."""
        if self._train_sums:
            means = {f"train/{k}_epoch": (total / count).float() for k, (total, count) in self._train_sums.items()}
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)
        self._train_sums = {}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "val")

    def test_terms(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The loss terms of a test batch (as :meth:`loss_terms` with ``stage="test"``) and its per-example
        ``log p(x)`` (as :meth:`log_prob`), shape ``(B,)``.

        The default evaluates the model twice, once for each. A family whose ``log_prob`` already yields the
        loss terms (flows, autoregressive and other exact models: the loss is ``-log_prob(x).mean()``)
        overrides it to evaluate once, which halves the cost of its test epoch."""
        return self.loss_terms(x, "test"), self.log_prob(x)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        terms, log_prob = self.test_terms(x)
        self._log_eval_terms(terms, "test", x.shape[0])
        self.test_nll.update(-log_prob)

    def on_test_epoch_end(self) -> None:
        nll, stderr, _ = self.test_nll.compute()
        self.log("test/nll", nll.float(), sync_dist=False)
        self.log("test/nll_stderr", stderr.float(), sync_dist=False)
        offset = getattr(getattr(self.trainer, "datamodule", None), "bpd_offset", None)
        if offset is not None:
            self.log("test/bpd", float(bits_per_dim(nll.item(), self.data_dim, offset)), sync_dist=False)
        self.test_nll.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Per-example log-likelihood estimates of the batch."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.log_prob(x)

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return opt
        config: dict[str, Any] = {"scheduler": self.lr_scheduler_factory(opt)}
        if self.automatic_optimization:  # what a ReduceLROnPlateau watches; the manual loop steps it itself
            config["monitor"] = self.monitor
        return {"optimizer": opt, "lr_scheduler": config}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

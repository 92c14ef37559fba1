"""The base every model family shares: one ``_common_step``, optimiser injection, test NLL and bits/dim.

A family implements :meth:`GenerativeModel.loss_terms` (its training objective and the numbers to log),
:meth:`GenerativeModel.log_prob` (its test log-likelihood estimate, named by :attr:`estimator`) and
:meth:`GenerativeModel.sample`. The base logs ``f"{stage}/{name}"`` for every term, and at test time
``test/nll`` (nats per example), its standard error, ``test/bpd`` where the data gives it a meaning.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_gm.metrics import MeanStdErr, bits_per_dim

__all__ = ["GenerativeModel"]


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class GenerativeModel(pl.LightningModule):
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

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        optimizer: OptimizerCallable = _adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.data_dim = int(math.prod(self.data_shape))
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.test_nll = MeanStdErr()

    # --- what a family implements ---------------------------------------------------------------
    def loss_terms(self, x: Tensor, stage: str) -> dict[str, Tensor]:
        """Objective terms for a batch ``x``: a dict with ``"loss"`` (scalar to minimise) and any
        other scalars worth logging under ``f"{stage}/..."``."""
        raise NotImplementedError

    @property
    def estimator(self) -> str:
        """Name of the test log-likelihood estimator (``exact``, ``ais``, ``iwae-5000``, ``bound``...)."""
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
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in terms.items() if k != "loss"},
            on_step=on_step,
            on_epoch=True,
            prog_bar=False,
            batch_size=x.shape[0],
            sync_dist=not on_step,
        )
        self.log(f"{stage}/loss", terms["loss"], on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=x.shape[0], sync_dist=not on_step)
        return terms["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._common_step(batch, "test")
        self.test_nll.update(-self.log_prob(x))

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
        sched = self.lr_scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor}}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

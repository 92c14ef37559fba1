r"""AIS evaluation of RBM-family models: a progress bar at test, optional cheap AIS on validation, and the
per-example numbers behind ``test/nll`` written to the run folder.

How the pieces meet (one source for every number):

* the **model** owns :math:`\log Z` (:class:`~lightning_gm.models.energy.PartitionMixin`): its
  ``ensure_log_partition()`` computes it once per set of parameters with the *test schedule* of its own
  config (``ais.runs``, ``ais.steps``, ``ais.seed``; exact enumeration when small), with a progress bar; its
  ``log_prob(x) = log_prob_unnormalized(x) - log Z`` feeds the base class's ``test/nll``, and it logs
  ``test/logZ``, ``test/logZ_stderr``, the interval ``test/logZ_lower``/``test/logZ_upper``, the ESS and the
  matching ``test/nll_lower``/``test/nll_upper``;
* this **callback** (for any model with ``ensure_log_partition`` and ``log_prob_unnormalized``) collects the
  per-example unnormalised log-probabilities (:math:`-F(v)` for an RBM) and saves them with the AIS
  log-weights to ``<run>/ais/test.pt``; with ``every_n_epochs > 0`` it also runs a cheaper AIS (``val_runs``
  x ``val_steps``) at the end of those validation epochs and logs ``val/nll_ais`` and ``val/logZ``.

Under DDP the AIS runs are split across processes and the log-weights all-gathered (see
:class:`~lightning_gm.models.energy.PartitionMixin`), so every process holds the same :math:`\log\hat Z`;
the per-example values are all-gathered before rank 0 writes the file.

.. math:: \widehat{\mathrm{NLL}} = \frac1N\sum_n F(v_n) + \log\hat Z

References:
    Neal (2001), Annealed importance sampling; Salakhutdinov & Murray (2008), On the quantitative
    analysis of deep belief networks, ICML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_gm.errors import ConfigError
from lightning_gm.progress import trainer_progress

__all__ = ["AISEvaluation"]


class AISEvaluation(pl.Callback):
    """Run the model's AIS at test with progress, optionally every ``every_n_epochs`` on validation,
    and store the per-example free energies behind ``test/nll``.

    Args:
        every_n_epochs: also estimate the validation NLL every this many epochs (0 = only at test).
        val_runs: AIS chains of the validation estimate.
        val_steps: intermediate distributions of the validation estimate (cheap; the test schedule is the
            model's ``ais_steps``).
        progress: show a progress bar of the validation AIS (rank 0; the test's is the model's).
        save: write ``<run>/ais/test.pt`` (per-example unnormalised log-probabilities, AIS log-weights,
            log Z and its interval).
    """

    def __init__(self, every_n_epochs: int = 0, val_runs: int = 20, val_steps: int = 1000, progress: bool = True,
                 save: bool = True) -> None:
        if every_n_epochs < 0 or val_runs < 1 or val_steps < 3:
            raise ConfigError(
                f"AISEvaluation: every_n_epochs >= 0, val_runs >= 1, val_steps >= 3 needed; got {every_n_epochs}, "
                f"{val_runs}, {val_steps}"
            )
        self.every_n_epochs, self.val_runs, self.val_steps = every_n_epochs, val_runs, val_steps
        self.progress, self.save = progress, save
        self._values: list[Tensor] = []
        self._val_values: list[Tensor] = []
        self.last_path: Optional[Path] = None

    @staticmethod
    def _check(pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "ensure_log_partition"):
            raise ConfigError(
                f"AISEvaluation needs an RBM-family model (with ensure_log_partition); got {type(pl_module).__name__}"
            )

    # ------------------------------------------------------------------ test
    def on_test_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._check(pl_module)
        self._values = []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        with torch.no_grad():
            self._values.append(pl_module.log_prob_unnormalized(x).detach().double().cpu())

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        values = torch.cat(self._values) if self._values else torch.zeros(0, dtype=torch.float64)
        self._values = []
        if trainer.world_size > 1:
            values = pl_module.all_gather(values.to(pl_module.device)).reshape(-1).cpu()
        if not (self.save and trainer.is_global_zero):
            return
        lp = pl_module.ensure_log_partition()
        path = Path(trainer.default_root_dir) / "ais" / "test.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "log_prob_unnormalized": values,  # -F(v) for an RBM; log p = this - log_z
                "log_z": lp.log_z,
                "log_z_interval": lp.interval,
                "log_z_stderr": lp.stderr,
                "estimator": pl_module.estimator,
                "log_weights": lp.log_weights,
                "runs": lp.runs,
                "steps": lp.steps,
            },
            path,
        )
        self.last_path = path

    # ------------------------------------------------------------------ validation
    def _due(self, trainer: pl.Trainer) -> bool:
        return self.every_n_epochs > 0 and not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._val_values = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._due(trainer):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            with torch.no_grad():
                self._val_values.append(pl_module.log_prob_unnormalized(x).detach().double())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self._due(trainer) or not self._val_values:
            return
        self._check(pl_module)
        bar = trainer_progress(trainer, f"val AIS ({self.val_runs} runs x {self.val_steps} betas)", unit="beta",
                               enabled=self.progress)
        try:
            lp = pl_module.compute_log_partition(self.val_runs, self.val_steps, progress=bar)
        finally:
            bar.close()
        values = torch.cat(self._val_values)
        total = torch.stack([values.sum(), torch.tensor(float(len(values)), dtype=values.dtype, device=values.device)])
        total = trainer.strategy.reduce(total, reduce_op="sum") if trainer.world_size > 1 else total
        nll = -float(total[0] / total[1]) + lp.log_z
        pl_module.log("val/nll_ais", nll, sync_dist=False)
        pl_module.log("val/logZ", lp.log_z, sync_dist=False)
        self._val_values = []

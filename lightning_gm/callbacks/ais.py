r"""AIS evaluation of the energy models: the per-example numbers behind ``test/nll``, its conservative counterpart
on an evenly spaced subset (RAISE), and an optional cheap AIS on validation.

How the pieces meet (one source for every number):

* the **model** owns :math:`\log Z` (:class:`~lightning_gm.models.energy.PartitionMixin`): its
  ``ensure_log_partition()`` computes it once per set of parameters with the *test schedule* of its own
  config (``ais.runs``, ``ais.steps``, ``ais.seed``; exact enumeration when small), with a progress bar; its
  ``log_prob(x) = log_prob_unnormalized(x) - log Z`` feeds the base class's ``test/nll``, and it logs
  ``test/logZ``, ``test/logZ_stderr``, the interval ``test/logZ_lower``/``test/logZ_upper``, the ESS and the
  matching ``test/nll_lower``/``test/nll_upper``;
* this **callback** (for any model with ``ensure_log_partition``, ``log_prob_unnormalized`` and
  ``reverse_annealing_start``) collects the per-example unnormalised log-probabilities (:math:`-F(v)` for an RBM)
  and saves them with the AIS log-weights to ``<run>/ais/test.pt``; it brackets the test NLL (``bracket``,
  :class:`~lightning_gm.estimators.reverse.Bracket`): on ``bracket.examples`` evenly spaced test examples it
  runs reverse annealing from the data (RAISE, Burda et al. 2015; a stochastic *lower* bound of the
  log-likelihood, where forward AIS errs high) and logs ``test/nll_conservative`` (RAISE) and
  ``test/nll_subset`` (the model's own estimate on the same examples), their standard errors, the width
  ``test/bracket_gap`` with its paired standard error ``test/bracket_gap_stderr`` (an inverted bracket, RAISE
  below the forward number by more than 3 of them, is a warning: the forward log Z is then likely high) and
  ``test/bracket_examples``; with ``every_n_epochs > 0`` it also runs a cheaper AIS (``val_runs`` x
  ``val_steps``) at the end of those validation epochs and logs ``val/nll_ais`` and ``val/logZ``.

The bracket's examples come in blocks of ``bracket.block``, block ``j`` annealed with
``chain_generator(bracket.seed, j)`` and the blocks dealt round-robin to the DDP processes, so its numbers do not
depend on the number of processes. The label of the bracket (``summary.json["conservative_estimator"]``) is
``raise <chains>x<steps> on <n> of <N>``; a bracket wider than 1 nat is a warning in ``summary.json``.

.. math:: \widehat{\mathrm{NLL}} = \frac1N\sum_n F(v_n) + \log\hat Z

References:
    Neal (2001), Annealed importance sampling; Salakhutdinov & Murray (2008), On the quantitative
    analysis of deep belief networks, ICML; Burda, Grosse & Salakhutdinov (2015), Accurate and conservative
    estimates of MRF log-likelihood using reverse annealing, AISTATS.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_gm.callbacks.iwae import fetch_examples, test_examples, tested_examples
from lightning_gm.errors import ConfigError
from lightning_gm.estimators.reverse import Bracket, raise_log_prob
from lightning_gm.estimators.seeded import shard_indices
from lightning_gm.nn.rbm import chain_generator
from lightning_gm.progress import trainer_progress

__all__ = ["AISEvaluation"]


class AISEvaluation(pl.Callback):
    """Bracket the test NLL of an energy model, store the numbers behind it, optionally estimate it on validation.

    Args:
        every_n_epochs: also estimate the validation NLL every this many epochs (0 = only at test).
        val_runs: AIS chains of the validation estimate.
        val_steps: intermediate distributions of the validation estimate (cheap; the test schedule is the
            model's ``ais.steps``).
        bracket: the conservative counterpart on an evenly spaced test subset
            (:class:`~lightning_gm.estimators.reverse.Bracket`; ``examples: 0`` turns it off).
        progress: show progress bars (rank 0; the test's AIS bar is the model's).
        save: write ``<run>/ais/test.pt`` (per-example unnormalised log-probabilities, AIS log-weights,
            log Z and its interval).
    """

    def __init__(self, every_n_epochs: int = 0, val_runs: int = 20, val_steps: int = 1000,
                 bracket: Bracket = Bracket(), progress: bool = True, save: bool = True) -> None:
        if every_n_epochs < 0 or val_runs < 1 or val_steps < 3:
            raise ConfigError(
                f"AISEvaluation: every_n_epochs >= 0, val_runs >= 1, val_steps >= 3 needed; got {every_n_epochs}, "
                f"{val_runs}, {val_steps}"
            )
        self.every_n_epochs, self.val_runs, self.val_steps = every_n_epochs, val_runs, val_steps
        self.bracket = Bracket.coerce(bracket)
        self.progress, self.save = progress, save
        self.bracket_results: dict[str, Any] = {}
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
        bracket = self.run_bracket(trainer, pl_module)
        if not (self.save and trainer.is_global_zero and getattr(pl_module, "has_test_likelihood", True)):
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
                **{f"bracket_{k}": v for k, v in bracket.items()},
            },
            path,
        )
        self.last_path = path

    # ------------------------------------------------------------------ the bracket
    def run_bracket(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        """RAISE and the model's own estimate on the bracket's evenly spaced test examples; logs the
        ``test/nll_conservative``, ``test/nll_subset`` and ``test/bracket_examples`` metrics and returns the
        per-example values (every process gets them)."""
        self.bracket_results = {}
        if self.bracket.examples == 0 or not hasattr(pl_module, "reverse_annealing_start") \
                or not getattr(pl_module, "has_test_likelihood", True):
            return {}
        if pl_module.estimator == "exact":
            return {}  # log Z enumerated, log p exact: there is nothing to bracket
        dataset, total = test_examples(trainer), tested_examples(trainer)
        n = min(self.bracket.examples, total)
        if n < 1:
            return {}
        chains = self.bracket.chains
        steps = self.bracket.steps or pl_module.ais.steps
        picks = (torch.arange(n) * total) // n  # evenly spaced over the tested examples
        blocks = torch.arange(n).split(self.bracket.block)
        mine = shard_indices(len(blocks), trainer.global_rank, trainer.world_size).tolist()
        device = pl_module.device
        bar = trainer_progress(trainer, f"RAISE ({n} examples x {chains} chains x {steps:,} betas)", unit="beta",
                               enabled=self.progress)
        conservative = torch.zeros(n, dtype=torch.float64, device=device)
        optimistic = torch.zeros(n, dtype=torch.float64, device=device)
        try:
            with torch.no_grad():
                for k, j in enumerate(mine):
                    x = fetch_examples(dataset, picks[blocks[j]]).to(device)
                    g = chain_generator(self.bracket.seed, j, device)
                    start = pl_module.reverse_annealing_start(x, chains, g)
                    res = raise_log_prob(start, steps, generator=g,
                                         progress=lambda s, t, k=k: bar(k * steps + s, len(mine) * steps))
                    conservative[blocks[j]] = res.log_prob.to(device)
                    optimistic[blocks[j]] = pl_module.log_prob(x).detach().to(torch.float64)
        finally:
            bar.close()
        if trainer.world_size > 1:  # every example was computed by exactly one process; the others hold zeros
            conservative = trainer.strategy.reduce(conservative, reduce_op="sum")
            optimistic = trainer.strategy.reduce(optimistic, reduce_op="sum")
        cons_nll, opt_nll = -conservative.cpu(), -optimistic.cpu()
        se = (lambda t: float(t.std() / math.sqrt(n)) if n > 1 else 0.0)
        # the width of the bracket, paired over the same examples (its s.e. is far below either mean's)
        metrics = {"nll_conservative": float(cons_nll.mean()), "nll_conservative_stderr": se(cons_nll),
                   "nll_subset": float(opt_nll.mean()), "nll_subset_stderr": se(opt_nll),
                   "bracket_gap": float((cons_nll - opt_nll).mean()), "bracket_gap_stderr": se(cons_nll - opt_nll),
                   "bracket_examples": float(n)}
        for key, value in metrics.items():
            pl_module.log(f"test/{key}", value, sync_dist=False)
        self.bracket_results = {
            "label": f"raise {chains:,}x{steps:,} on {n:,} of {len(dataset):,}", "gap": metrics["bracket_gap"],
            "indices": picks, "example_nll_conservative": cons_nll, "example_nll_subset": opt_nll, **metrics,
        }
        return self.bracket_results

    def summary_fields(self) -> dict[str, Any]:
        """``conservative_estimator`` (the bracket's label) and a warning when the bracket is wider than 1 nat, for
        ``summary.json``."""
        if not self.bracket_results:
            return {}
        out: dict[str, Any] = {"conservative_estimator": self.bracket_results["label"]}
        gap, se = self.bracket_results["gap"], self.bracket_results["bracket_gap_stderr"]
        label = self.bracket_results["label"]
        if abs(gap) > 1.0:
            out["warnings"] = [f"AIS/RAISE bracket {gap:.2f} nats wide ({label}; over 1 nat)"]
        if gap < -3 * se:  # RAISE's NLL is an upper bound in expectation: below the forward NLL means log Z_hat is high
            out.setdefault("warnings", []).append(
                f"AIS/RAISE bracket inverted: RAISE NLL {-gap:.2f} +- {se:.2f} nats below the forward AIS NLL ({label}): "
                "the forward log Z is likely overestimated (a low-ESS run); more AIS runs or steps")
        return out

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

"""The AIS evaluation path (model + AISEvaluation callback) against the exact log Z of a trained RBM."""

from __future__ import annotations

import json


import lightning.pytorch as pl
import pytest
import torch

from lightning_gm.callbacks.summary import RunSummary
from lightning_gm.estimators.ais import AISSchedule
from lightning_gm.estimators.reverse import Bracket
from lightning_gm.nn.rbm import CD
from lightning_gm.callbacks import AISEvaluation
from lightning_gm.data import DigitsDataModule
from lightning_gm.estimators.ais import base_rate_log_odds
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.models import RBM
from lightning_gm.models.momentum import MomentumWarmup


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 64-20 RBM trained by CD-1 on binarised 8x8 digits, tested through the callback with AIS."""
    root = tmp_path_factory.mktemp("ais")
    pl.seed_everything(0)
    dm = DigitsDataModule(binarize="static", batch_size=50, eval_batch_size=300)
    model = RBM(data_shape=dm.shape, n_hidden=20, cd=CD(persistent=False), sample_steps=10,
                ais=AISSchedule(exact_max_units=0, runs=100, steps=3000), momentum=MomentumWarmup(epochs=1),
                optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    callback = AISEvaluation(every_n_epochs=15, val_runs=20, val_steps=500, progress=False,
                             bracket=Bracket(examples=60, steps=50, block=40))
    summary = RunSummary(run_dir=str(root / "run"))
    trainer = pl.Trainer(max_epochs=30, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(root),
                         callbacks=[callback, summary])
    trainer.fit(model, dm)
    val_metrics = dict(trainer.callback_metrics)
    results = trainer.test(model, dm, verbose=False)[0]
    exact = log_partition_enumerate(model.rbm)  # 2^20 hidden configurations, once
    return {"model": model, "dm": dm, "results": results, "callback": callback, "val": val_metrics, "exact": exact,
            "summary": json.loads((root / "run" / "summary.json").read_text())}


def test_model_is_trained_far_from_the_base_rate(trained) -> None:
    """The trained RBM beats the independent-pixel base-rate model (the AIS start) by many nats."""
    model, dm = trained["model"], trained["dm"]
    exact = trained["exact"]
    x = dm.splits["test"][0].double()
    b_a = base_rate_log_odds(dm.splits["train"][0])
    base_nll = float(-(x @ b_a - torch.nn.functional.softplus(b_a).sum()).mean())
    with torch.no_grad():
        rbm_nll = float(model.rbm.free_energy(x).mean()) + exact
    assert rbm_nll < base_nll - 2.0, (rbm_nll, base_nll)


def test_test_nll_is_the_ais_number_within_a_tenth_of_a_nat(trained) -> None:
    model, dm, res = trained["model"], trained["dm"], trained["results"]
    exact = trained["exact"]
    assert model.estimator == "ais 100x3,000"
    assert abs(res["test/logZ"] - exact) < 0.1
    assert res["test/logZ_lower"] <= res["test/logZ"] <= res["test/logZ_upper"]
    assert res["test/logZ_lower"] - 0.05 <= exact <= res["test/logZ_upper"] + 0.05
    with torch.no_grad():
        exact_nll = float(model.rbm.free_energy(dm.splits["test"][0]).mean()) + exact
    assert res["test/nll"] == pytest.approx(exact_nll, abs=0.1)
    assert res["test/nll_lower"] <= res["test/nll"] <= res["test/nll_upper"]


def test_callback_stores_the_numbers_behind_test_nll(trained) -> None:
    res, cb = trained["results"], trained["callback"]
    saved = torch.load(cb.last_path, weights_only=True)
    assert saved["estimator"] == "ais 100x3,000" and saved["runs"] == 100 and saved["steps"] == 3000
    assert saved["log_weights"].shape == (100,) and saved["log_prob_unnormalized"].shape == (300,)
    nll = float(-(saved["log_prob_unnormalized"] - saved["log_z"]).mean())
    assert nll == pytest.approx(res["test/nll"], abs=1e-3)


def test_the_bracket_brackets_the_exact_nll_on_its_subset(trained) -> None:
    """60 evenly spaced test examples (every 5th of 300): RAISE's NLL (1 chain x 50 steps, a short schedule that
    makes the bracket visible) is conservative, above the exact NLL of the same examples, while the model's own
    estimate (AIS log Z, 100 x 3,000) is within a tenth of a nat of it; the labels and numbers reach summary.json."""
    model, dm, res, cb = trained["model"], trained["dm"], trained["results"], trained["callback"]
    x = dm.splits["test"][0][::5]
    with torch.no_grad():
        exact_nll = float(model.rbm.free_energy(x).double().mean()) + trained["exact"]
    assert res["test/bracket_examples"] == 60 and torch.equal(cb.bracket_results["indices"], torch.arange(0, 300, 5))
    assert res["test/nll_conservative"] > exact_nll + 0.1 and res["test/nll_conservative"] < exact_nll + 3.0
    assert res["test/nll_subset"] == pytest.approx(exact_nll, abs=0.1)
    summary = trained["summary"]
    assert summary["conservative_estimator"] == "raise 1x50 on 60 of 300"
    assert summary["estimator"] == "ais 100x3,000" and isinstance(summary["warnings"], list)
    assert {"test/nll_conservative", "test/nll_subset", "test/bracket_examples", "test/ais_ess"} <= set(summary["test"])
    gap = res["test/nll_conservative"] - res["test/nll_subset"]
    assert any("bracket" in w for w in summary["warnings"]) == (gap > 1.0)
    # the per-example values behind the bracket are kept, and its width has a paired standard error
    per_example = cb.bracket_results["example_nll_conservative"] - cb.bracket_results["example_nll_subset"]
    assert per_example.shape == (60,) and res["test/bracket_gap"] == pytest.approx(gap, abs=1e-4)
    assert res["test/bracket_gap_stderr"] == pytest.approx(float(per_example.std() / 60 ** 0.5), rel=1e-4)


def test_an_inverted_bracket_is_a_warning() -> None:
    """RAISE is conservative in expectation: a RAISE NLL below the forward one by more than 3 paired s.e. says the
    forward log Z is high; within 3 s.e. it is noise and no warning."""
    cb = AISEvaluation()
    cb.bracket_results = {"label": "raise 1x14,500 on 500 of 10,000", "gap": -0.9, "bracket_gap_stderr": 0.2}
    (warning,) = cb.summary_fields()["warnings"]
    assert "inverted" in warning and "0.90 +- 0.20" in warning
    cb.bracket_results.update(gap=-0.5)
    assert "warnings" not in cb.summary_fields()


def test_validation_ais_every_n_epochs(trained) -> None:
    model, dm, val = trained["model"], trained["dm"], trained["val"]
    assert "val/nll_ais" in val and "val/logZ" in val
    # the cheap schedule still lands near the end-of-training value (same parameters: last epoch was AIS'd)
    exact = trained["exact"]
    assert abs(float(val["val/logZ"]) - exact) < 1.0


def test_callback_refuses_models_without_log_partition() -> None:
    from lightning_gm.errors import ConfigError
    from lightning_gm.models import VAE

    with pytest.raises(ConfigError, match="RBM-family"):
        AISEvaluation._check(VAE(data_shape=(4,)))


def test_an_energy_model_declares_its_bracket_unless_the_config_sets_one() -> None:
    """A bare checkpoint tested by the command (no callbacks in its config) is bracketed as a config would bracket
    it; a configured AISEvaluation (its own bracket settings) is not doubled; a VAE gets no AIS evaluation."""
    from lightning_gm.callbacks.iwae import IWAEEvaluation
    from lightning_gm.callbacks.registry import callbacks_for, evaluations_for
    from lightning_gm.models import VAE

    rbm = RBM(data_shape=(6,), n_hidden=4)
    (found,) = evaluations_for(rbm)
    assert isinstance(found, AISEvaluation) and found.bracket == Bracket()
    configured = AISEvaluation(bracket=Bracket(examples=7))
    assert evaluations_for(rbm, [configured]) == []
    assert not any(isinstance(cb, AISEvaluation) for cb in callbacks_for(rbm, [configured]))
    assert [type(cb) for cb in evaluations_for(VAE(data_shape=(4,)))] == [IWAEEvaluation]

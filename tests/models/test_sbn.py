"""The SigmoidBeliefNet LightningModule: config errors, the estimator it names, wake-sleep and reweighted
wake-sleep fits that approach the teacher's exact log-likelihood on data from a tiny SBN, the seeded IWAE test
path against enumeration, and a CLI run of the shipped config on binarised digits."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.seeded import IWEvaluation
from lightning_gm.models import SigmoidBeliefNet
from lightning_gm.nn.sbn import HelmholtzMachine
from tests.conftest import ROOT

D = 6


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"training": "cd"}, "training"),
        ({"q_update": "never"}, "q_update"),
        ({"training": "ws", "q_update": "both"}, "q_update"),
        ({"training": "ws", "q_update": "wake"}, "q_update"),
        ({"k": 0}, "k"),
        ({"evaluation": {"val_k": 0}}, "evaluation.val_k"),
        ({"evaluation": {"test_k": 0}}, "evaluation.test_k"),
        ({"evaluation": {"sample_block": 0}}, "evaluation.sample_block"),
        ({"sleep_samples": -1}, "sleep_samples"),
        ({"hidden": []}, "hidden"),
        ({"hidden": [4, 0]}, "hidden"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, key: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=f"model.init_args.{key}"):  # a group's check: ValueError
        SigmoidBeliefNet(data_shape=(D,), **kwargs)


@pytest.mark.parametrize("hidden,exact_max_units,estimator", [((3, 2), 16, "exact"), ((3, 2), 4, "iwae-300"),
                                                               ((200, 200, 10), 16, "iwae-300")])
def test_estimator_names_how_log_p_is_obtained(hidden, exact_max_units: int, estimator: str) -> None:
    from lightning_gm.callbacks.registry import evaluations_for

    m = SigmoidBeliefNet(data_shape=(D,), hidden=hidden, evaluation=IWEvaluation(val_k=20, test_k=300),
                         exact_max_units=exact_max_units)
    assert m.estimator == estimator
    callbacks = evaluations_for(m)  # what the command attaches: the model declares, it builds nothing
    assert [type(c).__name__ for c in callbacks] == ([] if estimator == "exact" else ["IWAEEvaluation"])


def _teacher_data(n: int, seed: int) -> tuple[HelmholtzMachine, torch.Tensor]:
    torch.manual_seed(seed)
    teacher = HelmholtzMachine(D, (3,))
    with torch.no_grad():
        for p in teacher.generative_parameters():
            p.normal_(0.0, 2.0)
    x, _, _ = teacher.sample_joint(n, generator=torch.Generator().manual_seed(seed + 10))
    return teacher, x


def _loader(x: torch.Tensor, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=100, shuffle=shuffle)


def _trainer(tmp_path: Path, **kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path), **kw)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("training,k", [("ws", 1), ("rws", 5)])
def test_fit_approaches_the_teachers_exact_log_likelihood(tmp_path, training: str, k: int, seed: int) -> None:
    """Data from a 6-3 SBN; a 6-3 student trained by WS or RWS: its exact test NLL (enumeration, logged as
    test/nll) falls by more than 1 nat (from ~4.2) and to within 0.15 nats of the teacher's exact NLL."""
    teacher, x = _teacher_data(3000, seed)
    train, test = x[:2000], x[2000:]
    with torch.no_grad():
        teacher_nll = float(-teacher.log_prob_enumerate(test).mean())
    torch.manual_seed(seed)
    model = SigmoidBeliefNet(data_shape=(D,), hidden=(3,), training=training, k=k, evaluation=IWEvaluation(val_k=10),
                             optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    with torch.no_grad():
        initial = float(-model.log_prob(test).mean())
    _trainer(tmp_path, max_epochs=8, num_sanity_val_steps=0, limit_val_batches=0).fit(model, _loader(train, True))
    metrics = _trainer(tmp_path).test(model, _loader(test, False), verbose=False)[0]
    assert model.estimator == "exact"
    assert metrics["test/nll"] == pytest.approx(float(-model.log_prob(test).mean()), abs=1e-4)
    assert metrics["test/nll"] < initial - 1.0
    assert metrics["test/nll"] < teacher_nll + 0.15, (metrics["test/nll"], teacher_nll, initial)


def test_iwae_test_path_agrees_with_enumeration(tmp_path) -> None:
    """exact_max_units=0 forces the platform's seeded IWAE evaluation (k = 3000) on a network small enough to
    enumerate: test/nll within 0.05 nats of the exact mean NLL, and the ELBO of the same samples below log p(x)."""
    _, x = _teacher_data(200, 3)
    torch.manual_seed(0)
    model = SigmoidBeliefNet(data_shape=(D,), hidden=(3, 2), evaluation=IWEvaluation(test_k=3000, val_k=5),
                             exact_max_units=0)
    with torch.no_grad():
        for p in model.net.recognition_parameters():
            p.mul_(0.3)
        exact = float(-model.net.log_prob_enumerate(x).mean())
    assert model.estimator == "iwae-3000"
    from lightning_gm.callbacks.registry import evaluations_for

    metrics = _trainer(tmp_path, callbacks=evaluations_for(model)).test(model, _loader(x, False), verbose=False)[0]
    assert metrics["test/nll"] == pytest.approx(exact, abs=0.05)
    assert metrics["test/iw_elbo"] < -exact  # the ELBO of the same samples is a looser bound


def test_sample_and_reconstruct_shapes_and_values() -> None:
    m = SigmoidBeliefNet(data_shape=(1, 4, 4), hidden=(5, 3))
    probs = m.sample(7)
    assert probs.shape == (7, 1, 4, 4) and bool(((probs > 0) & (probs < 1)).all())
    m.sample_probabilities = False
    binary = m.sample(7)
    assert bool(((binary == 0) | (binary == 1)).all())
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    assert m.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("config", ["sbn_ws", "sbn_rws"])
def test_shipped_config_fits_and_tests_on_digits(run_cli, tmp_path, config: str) -> None:
    """The shipped MNIST config with the data swapped for thresholded 8x8 digits, a few steps: a complete run
    folder with samples and an iwae-k test."""
    code = run_cli(
        "fit", "--config", str(ROOT / "conf" / f"{config}.yaml"), "--data=lightning_gm.data.DigitsDataModule",
        "--data.binarize=threshold", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
        "--model.init_args.evaluation.test_k=20", "--model.init_args.hidden=[16, 8]", "--run_name=smoke",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    )
    assert code == 0
    run = next(tmp_path.glob("runs/*/smoke"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "tested" and summary["estimator"] == "iwae-20" and summary["family"] == "sbn"
    assert any(p.name.startswith("samples_epoch=") for p in (run / "samples").iterdir())

"""The Hopfield LightningModule: one storage pass (no optimiser), exact Hebbian couplings, retrieval metrics that
are right on random patterns below capacity, no fake NLL, clear config errors, and a CLI run with pictures."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.errors import ConfigError
from lightning_gm.models.hopfield import Hopfield, RetrievalTest
from lightning_gm.nn.hopfield import hebbian_weights


def _trainer(tmp_path, **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path), **kw)


def _random_binary(n_examples: int, n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_examples, n, generator=g) < 0.5).float()
    return DataLoader(TensorDataset(x, torch.arange(n_examples) % 10), batch_size=4)


@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_patterns_below_capacity_are_retrieved(tmp_path, update: str, seed: int) -> None:
    """N = 200, P = 6 random patterns, cues with 10% flipped bits: every cue returns to its pattern exactly."""
    m = Hopfield(data_shape=(200,), num_patterns=6, balanced_classes=False, update=update,
                 retrieval_test=RetrievalTest(cue_noise=0.1, seed=seed))
    train, val = _random_binary(40, 200, seed), _random_binary(4, 200, 99)
    trainer = _trainer(tmp_path)
    trainer.fit(m, train, val)
    assert trainer.global_step == 0  # no optimiser steps: storage only
    x = train.dataset.tensors[0][:6]
    assert torch.equal(m.patterns, 2 * x - 1)
    assert torch.allclose(m.net.W, hebbian_weights(2 * x - 1))
    res = trainer.test(m, val, verbose=False)[0]
    assert res["test/retrieval_rate"] == 1.0 and res["test/bit_error"] == 0.0 and res["test/fixed_points"] == 1.0
    assert abs(res["test/cue_bit_error"] - 0.1) < 0.03
    assert res["test/energy_final"] < res["test/energy_cue"]
    assert res["test/load"] == pytest.approx(6 / 200)
    assert "test/nll" not in res


def test_overloaded_net_fails_to_retrieve(tmp_path) -> None:
    """P = 60 random patterns in N = 100 units (alpha = 0.6, far above 0.138): retrieval collapses."""
    m = Hopfield(data_shape=(100,), num_patterns=60, balanced_classes=False,
                 retrieval_test=RetrievalTest(cue_noise=0.05, cue_repeats=2))
    trainer = _trainer(tmp_path)
    trainer.fit(m, _random_binary(80, 100, 3), _random_binary(4, 100, 4))
    res = trainer.test(m, _random_binary(4, 100, 4), verbose=False)[0]
    assert res["test/retrieval_rate"] < 0.2 and res["test/fixed_points"] < 0.2


def test_balanced_classes_and_too_few_patterns(tmp_path) -> None:
    """Balanced storage takes labels 0, 1, 2, ... in turn; asking for more than the data holds is a ConfigError."""
    m = Hopfield(data_shape=(50,), num_patterns=3, balanced_classes=True)
    loader = _random_binary(40, 50, 5)
    _trainer(tmp_path).fit(m, loader, _random_binary(4, 50, 6))
    assert m.labels.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="num_patterns=50"):
        _trainer(tmp_path).fit(Hopfield(data_shape=(50,), num_patterns=50, balanced_classes=False), loader)


@pytest.mark.parametrize("kw,match", [(dict(update="parallel"), "update"), (dict(num_patterns=0), "num_patterns")])
def test_bad_configs_are_clear_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        Hopfield(data_shape=(16,), **kw)
    with pytest.raises(ValueError, match=r"model.init_args.retrieval_test.cue_noise must be in \[0, 0.5\] \(a flip probability\), got 0.7"):
        Hopfield(data_shape=(16,), retrieval_test={"cue_noise": 0.7})


def test_a_checkpoint_with_the_flat_retrieval_keys_still_loads(tmp_path) -> None:
    """A checkpoint written before the ``retrieval_test`` group (flat ``cue_noise``, ``eval_seed``, ...) loads with
    them in the group, and the stored patterns come back."""
    m = Hopfield(data_shape=(50,), num_patterns=3, balanced_classes=False)
    trainer = _trainer(tmp_path)
    trainer.fit(m, _random_binary(10, 50, 1))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"] = dict(data_shape=[50], num_patterns=3, balanced_classes=False, num_classes=10, cue_noise=0.2,
                                    cue_repeats=4, update="sync", max_sweeps=30, retrieval_overlap=0.8, eval_seed=7)
    torch.save(ckpt, path)
    loaded = Hopfield.load_from_checkpoint(path)
    assert loaded.retrieval_test == RetrievalTest(cue_noise=0.2, cue_repeats=4, overlap=0.8, seed=7)
    assert loaded.update == "sync" and loaded.max_sweeps == 30 and torch.equal(loaded.patterns, m.patterns)


def test_not_a_density_model() -> None:
    m = Hopfield(data_shape=(16,))
    with pytest.raises(NotImplementedError, match="not a density model"):
        m.log_prob(torch.zeros(1, 16))


def test_cli_store_digits_and_pictures(run_cli, tmp_path) -> None:
    """conf/hopfield.yaml on sklearn digits: retrieval metrics in summary.json, retrieval and energy pictures."""
    from tests.conftest import ROOT

    args = ["fit", "--config", str(ROOT / "conf" / "hopfield.yaml"), "--data=lightning_gm.data.DigitsDataModule",
            "--data.binarize=threshold", "--data.val_size=300", "--data.eval_batch_size=300",
            "--model.init_args.num_patterns=2", "--trainer.logger=false", "--run_name=t"]
    assert run_cli(*args) == 0
    run = tmp_path / "runs" / "hopfield" / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "none (retrieval metrics)" and "test/nll" not in summary["test"]
    assert 0.0 <= summary["test"]["test/retrieval_rate"] <= 1.0
    for name in ("retrieval_test.png", "energy_test.png", "samples_test.png"):
        assert (run / "samples" / name).exists()
    # the stored patterns are the run's state: last.ckpt holds them although no optimiser step was taken
    import lightning_gm

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 0 and ckpt["epoch"] == 0
    loaded = lightning_gm.load_model(run)
    assert loaded.patterns.abs().sum() > 0
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in loaded.state_dict().items())

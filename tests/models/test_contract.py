"""The contract every model family keeps, checked on each one built small: ``log_prob`` gives one number per
example, ``sample`` gives data-shaped examples, the estimator is named, one batch fits and tests through a
``pl.Trainer``, and a checkpoint comes back as the same model (equal state dicts, equal ``log_prob``).

A family without a tractable likelihood (:data:`NO_LIKELIHOOD`: the autoencoder, the convolutional DBN, the
Hopfield network) says so: ``log_prob`` raises ``NotImplementedError`` with a message, its test
logs other metrics and no ``test/nll``, and its round trip is checked on samples instead (equal: the chains'
random stream is part of the checkpoint); its ``estimator`` names what its test reports instead: ``none (...)``.

A new family (a ``GenerativeModel`` subclass in ``lightning_gm/models/``) fails
:func:`test_every_family_is_covered` until it is added to :data:`FAMILIES`.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import pkgutil
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_gm.models as models
from lightning_gm.callbacks.registry import callbacks_for
from lightning_gm.estimators.ais import AISSchedule
from lightning_gm.estimators.decoder_ais import HMCAnnealing
from lightning_gm.models.base import GenerativeModel
from lightning_gm.models.vae import IWEvaluation
from lightning_gm.nn.rbm import CD

FLAT = (6,)
IMAGE = (1, 6, 6)
AIS = AISSchedule(runs=4, steps=10, exact_max_units=12)
HMC = HMCAnnealing(chains=2, steps=3, leapfrog_steps=2)
IW = IWEvaluation(val_k=2, test_k=4)

#: family -> (a small instance's factory, the data shape it models)
FAMILIES: dict[str, tuple[Callable[[], GenerativeModel], tuple[int, ...]]] = {
    "VAE": (lambda: models.VAE(data_shape=FLAT, latent_dim=2, hidden=(8,), evaluation=IW), FLAT),
    "HierarchicalVAE": (lambda: models.HierarchicalVAE(data_shape=FLAT, latent_dims=(3, 2), hidden=((8,), (4,)),
                                                      evaluation=IW), FLAT),
    "Flow": (lambda: models.Flow(data_shape=FLAT), FLAT),
    "RBM": (lambda: models.RBM(data_shape=FLAT, n_hidden=3, cd=CD(chains=4), ais=AIS, monitor_examples=8,
                               sample_steps=2), FLAT),
    "GaussianRBM": (lambda: models.GaussianRBM(data_shape=FLAT, n_hidden=3, ais=AIS, monitor_examples=8,
                                               sample_steps=2), FLAT),
    "SubspaceRBM": (lambda: models.SubspaceRBM(data_shape=FLAT, n_hidden=2, subspace_size=2, cd=CD(chains=4),
                                               ais=AIS, monitor_examples=8, sample_steps=2), FLAT),
    "SpikeSlabRBM": (lambda: models.SpikeSlabRBM(data_shape=FLAT, n_hidden=3, ais=AIS, monitor_examples=8,
                                                 sample_steps=2), FLAT),
    "DBN": (lambda: models.DBN(data_shape=FLAT, hidden=(4, 3), epochs_per_layer=(1, 1), ais=AIS, sample_steps=2,
                               bound_samples=2), FLAT),
    "DBM": (lambda: models.DBM(data_shape=FLAT, hidden=(4, 3), epochs_per_layer=(0, 0), num_chains=4), FLAT),
    "MPDBM": (lambda: models.MPDBM(data_shape=FLAT, hidden=(4, 3), sample_steps=2, test_loglik=True), FLAT),
    "ConvRBM": (lambda: models.ConvRBM(data_shape=IMAGE, n_filters=2, filter_size=3, pool_size=2, ais=AIS,
                                       sample_steps=2), IMAGE),
    "ConvDBN": (lambda: models.ConvDBN(data_shape=IMAGE, n_filters=(2, 2), filter_size=(3, 2), pool_size=(2, 1),
                                       epochs_per_layer=(1, 1), sample_steps=2, down_steps=2), IMAGE),
    "PPCA": (lambda: models.PPCA(data_shape=FLAT, latent_dim=2), FLAT),
    "FactorAnalysis": (lambda: models.FactorAnalysis(data_shape=FLAT, latent_dim=2, em_iterations=5), FLAT),
    "Autoencoder": (lambda: models.Autoencoder(data_shape=FLAT, latent_dim=2, hidden=(8,)), FLAT),
    "DensityNetwork": (lambda: models.DensityNetwork(data_shape=FLAT, latent_dim=2, hidden=(8,),
                                                     samples={"train": 4, "val": 4, "test": 4, "chunk": 4}), FLAT),
    "NADE": (lambda: models.NADE(data_shape=FLAT, hidden=4), FLAT),
    "MADEDensity": (lambda: models.MADEDensity(data_shape=FLAT, hidden=(8,)), FLAT),
    "SigmoidBeliefNet": (lambda: models.SigmoidBeliefNet(data_shape=FLAT, hidden=(4, 2), evaluation=IW), FLAT),
    "GAN": (lambda: models.GAN(data_shape=FLAT, latent_dim=2, hidden=(8,), discriminator_hidden=(8,), ais=HMC,
                               bdmc_examples=0), FLAT),
    "GMMN": (lambda: models.GMMN(data_shape=FLAT, latent_dim=2, hidden=(8,), ais=HMC, bdmc_examples=0), FLAT),
    "Hopfield": (lambda: models.Hopfield(data_shape=FLAT, num_patterns=2, balanced_classes=False), FLAT),
}

NO_LIKELIHOOD = {"Autoencoder", "ConvDBN", "Hopfield"}

#: abstract-in-practice bases (no family of their own) and the classifier (not a density model)
BASES = {"GenerativeModel", "LatentVariableModel", "RBMModelBase", "ImplicitGenerativeModel", "LinearGaussianModel",
         "AutoregressiveBinaryModel", "DBMLikelihood"}


def _families_in_the_package() -> set[str]:
    found = set()
    for info in pkgutil.iter_modules(models.__path__):
        module = importlib.import_module(f"lightning_gm.models.{info.name}")
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, GenerativeModel) and cls.__module__ == module.__name__:
                found.add(name)
    return found - BASES


def test_every_family_is_covered() -> None:
    exported = {n for n in models.__all__ if inspect.isclass(getattr(models, n))
                and issubclass(getattr(models, n), GenerativeModel)} - BASES
    assert exported <= _families_in_the_package()
    assert _families_in_the_package() == set(FAMILIES)


def _data(shape: tuple[int, ...], n: int = 16) -> torch.Tensor:
    return (torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)) < 0.4).float()


def _loader(x: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=8, shuffle=False)


def _trainer(root: Path, model: GenerativeModel) -> pl.Trainer:
    return pl.Trainer(callbacks=callbacks_for(model), max_epochs=1, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1,
                      accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root)


def _log_prob(model: GenerativeModel, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.log_prob(x)


def _sample(model: GenerativeModel, n: int) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.sample(n)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_keeps_the_contract(family: str, tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    factory, shape = FAMILIES[family]
    model = factory()
    x = _data(shape)
    assert tuple(model.data_shape) == shape

    trainer = _trainer(tmp_path, model)
    trainer.fit(model, _loader(x), _loader(x[:8]))
    assert trainer.state.finished and trainer.current_epoch == 1
    trainer.test(model, _loader(x[:8]))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path).eval()
    model.eval()
    if family in NO_LIKELIHOOD:  # before any other draw: both random streams are at the checkpoint's state
        torch.testing.assert_close(_sample(loaded, 3), _sample(model, 3))
    batch = x[:5]
    with torch.no_grad():
        samples = model.sample(3)
    assert samples.shape == (3, *shape) and torch.isfinite(samples).all()

    if family in NO_LIKELIHOOD:
        assert "test/nll" not in trainer.callback_metrics
        assert any(k.startswith("test/") for k in trainer.callback_metrics)
        with pytest.raises(NotImplementedError, match=r"\w"):
            model.log_prob(batch)
        assert re.fullmatch(r"none \(\w[^()]*\)", model.estimator), model.estimator  # says what the test reports
    else:
        assert math.isfinite(float(trainer.callback_metrics["test/nll"]))
        label = model.estimator
        assert isinstance(label, str) and label.strip()
        log_prob = _log_prob(model, batch)
        assert log_prob.shape == (5,) and torch.isfinite(log_prob).all()

    expected, got = model.state_dict(), loaded.state_dict()
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{family}: {key}")
    if family not in NO_LIKELIHOOD:
        torch.testing.assert_close(_log_prob(loaded, batch), log_prob)

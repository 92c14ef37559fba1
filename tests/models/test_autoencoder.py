"""Autoencoders: no likelihood (a clear error), corruption statistics, the PCA baseline's exact
reconstruction error, and a ``lightning_gm fit`` whose test reports reconstruction errors, not an NLL."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_gm.errors import LightningGMError
from lightning_gm.models import Autoencoder
from lightning_gm.models.autoencoder import NoLikelihoodError, corrupt
from lightning_gm.nn import linear_gaussian as lg
from tests.conftest import write_fit_config


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_autoencoder_has_no_likelihood(architecture):
    model = Autoencoder((1, 8, 8), latent_dim=4, architecture=architecture, hidden=(32,), channels=(8, 16))
    x = torch.rand(5, 1, 8, 8)
    with pytest.raises(NoLikelihoodError, match="defines no density p\\(x\\).*test/reconstruction_error"):
        model.log_prob(x)
    assert isinstance(NoLikelihoodError("x"), LightningGMError)
    assert model.estimator == "none (reconstruction error)"
    assert model.reconstruct(x).shape == x.shape and model.sample(3).shape == (3, 1, 8, 8)
    terms = model.loss_terms(x, "val")
    ref = ((x.flatten(1) - model.reconstruct(x).flatten(1)) ** 2).sum(-1).mean()
    torch.testing.assert_close(terms["reconstruction_error"], ref)


@pytest.mark.parametrize("kind,level", [("masking", 0.25), ("salt_and_pepper", 0.3), ("gaussian", 0.2)])
def test_corruption_statistics(kind, level):
    torch.manual_seed(0)
    x = torch.full((400, 500), 0.6)
    noisy = corrupt(x, kind, level)
    if kind == "masking":
        assert (noisy == 0).float().mean().item() == pytest.approx(level, abs=0.005)
        assert ((noisy == 0) | (noisy == x)).all()
    elif kind == "salt_and_pepper":
        changed = noisy != x
        assert changed.float().mean().item() == pytest.approx(level, abs=0.005)
        assert noisy[changed].mean().item() == pytest.approx(0.5, abs=0.01)
    else:
        assert (noisy - x).std().item() == pytest.approx(level, rel=0.01)
    assert torch.equal(corrupt(x, "none", 0.0), x)


def test_pca_baseline_error_is_the_sum_of_discarded_eigenvalues():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3000, 12, generator=g) @ torch.randn(12, 12, generator=g)).float()
    model = Autoencoder((12,), latent_dim=4, hidden=(16,))
    model.fit_pca(x.split(500))
    err = ((x - model.pca_reconstruct(x)) ** 2).sum(-1).mean().item()
    evals = torch.linalg.eigvalsh(lg.StreamingMoments.of([x]).cov).flip(0)
    assert err == pytest.approx(evals[4:].sum().item(), rel=1e-4)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="noise_level must be > 0 with corruption='masking'"):
        Autoencoder((64,), corruption="masking", noise_level=0.0)
    with pytest.raises(ValueError, match="architecture must be mlp or conv"):
        Autoencoder((64,), architecture="rnn")  # type: ignore[arg-type]




@pytest.mark.parametrize("arch,corruption,level", [("mlp", "none", 0.0), ("conv", "masking", 0.25)])
def test_cli_fit_reports_reconstruction_error_not_nll(arch, corruption, level, run_cli, tmp_path):
    model = {"class_path": "lightning_gm.models.Autoencoder",
             "init_args": {"latent_dim": 6, "architecture": arch, "hidden": [32], "channels": [8, 16],
                           "corruption": corruption, "noise_level": level}}
    data = {"class_path": "lightning_gm.data.DigitsDataModule", "init_args": {"batch_size": 100}}
    config = write_fit_config(tmp_path / "ae.yaml", model, data, max_epochs=2)
    assert run_cli("fit", "--config", str(config), "--run_name=r") == 0
    run = tmp_path / "runs" / "ae" / "r"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "none (reconstruction error)" and summary["status"] == "tested"
    t = summary["test"]
    assert "test/nll" not in t and "test/bpd" not in t
    assert t["test/reconstruction_error"] > 0 and t["test/pca_reconstruction_error"] > 0
    assert ("test/denoising_error" in t) == (corruption != "none")
    assert (run / "samples" / "reconstructions_vs_pca.png").is_file()

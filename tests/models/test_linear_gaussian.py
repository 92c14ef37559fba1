"""PPCA and factor analysis as LightningModules: the fitted solution, exact log_prob, pictures, and a
``lightning_gm fit`` on the digits that fits from the train loader and keeps the solution in its checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lightning_gm.models import FactorAnalysis, PPCA
from lightning_gm.nn import linear_gaussian as lg
from tests.conftest import write_fit_config


def _data(n: int = 2000, D: int = 16, L: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, L, generator=g, dtype=torch.float64)
    psi = 0.05 + torch.rand(D, generator=g, dtype=torch.float64)
    return lg.sample(n, W, torch.randn(D, generator=g, dtype=torch.float64), psi, generator=g).float()


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_fitted_log_prob_is_the_gaussian_with_the_fitted_covariance(cls):
    x = _data()
    model = cls((16,), latent_dim=3)
    history = model.fit_data(x.split(300))
    assert bool(model.fitted) and history[-1] == pytest.approx(model.log_prob(x).double().mean().item(), abs=1e-3)
    C = model.W @ model.W.T + torch.diag(model.psi)
    mvn = torch.distributions.MultivariateNormal(model.mu, C)
    torch.testing.assert_close(model.log_marginal(x), mvn.log_prob(x.double()), rtol=0, atol=1e-8)
    assert model.estimator == "exact"
    assert model.num_parameters() == 16 * 3 + 16 + (1 if cls is PPCA else 16)
    # the state dict carries the solution
    clone = cls((16,), latent_dim=3)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.log_prob(x), model.log_prob(x))


def test_factor_analysis_beats_ppca_on_heteroscedastic_noise_and_em_is_monotone():
    x = _data()
    ppca, fa = PPCA((16,), latent_dim=3), FactorAnalysis((16,), latent_dim=3, em_iterations=300, tol=0.0)
    ppca.fit_data([x])
    history = fa.fit_data([x])
    assert (torch.tensor(history).diff() >= -1e-9).all()
    assert fa.log_prob(x).mean() > ppca.log_prob(x).mean() + 0.1


def test_ppca_reconstruction_is_the_projection_on_the_principal_subspace_as_noise_vanishes():
    x = _data()
    model = PPCA((16,), latent_dim=3)
    model.fit_data([x])
    rec = model.reconstruct(x).double()
    # E[z|x] shrinks towards 0 by M^-1; with W = U (Lambda - s^2)^1/2 the reconstruction is
    # U diag((l - s^2) / l) U' (x - mu) + mu
    moments = lg.StreamingMoments.of([x])
    evals, U = lg.pca(moments.cov, 3)
    shrink = (evals[:3] - model.sigma2) / evals[:3]
    ref = ((x.double() - model.mu) @ U) * shrink @ U.T + model.mu
    torch.testing.assert_close(rec, ref, rtol=0, atol=1e-4)


def test_samples_and_principal_subspace_picture(tmp_path):
    model = PPCA((64,), latent_dim=5)
    model.fit_data([torch.rand(500, 64)])
    assert model.sample(10).shape == (10, 64)
    path = model.principal_subspace_picture(tmp_path / "w.png")
    assert path is not None and path.stat().st_size > 0




@pytest.mark.parametrize("cls", ["PPCA", "FactorAnalysis"])
def test_cli_fit_solves_from_the_train_loader_and_tests_the_checkpoint(cls, run_cli, tmp_path):
    model = {"class_path": f"lightning_gm.models.{cls}", "init_args": {"latent_dim": 8}}
    data = {"class_path": "lightning_gm.data.DigitsDataModule", "init_args": {"dequantize": True, "batch_size": 200}}
    config = write_fit_config(tmp_path / "lg.yaml", model, data, max_epochs=1)
    assert run_cli("fit", "--config", str(config), "--run_name=r") == 0
    run = tmp_path / "runs" / "lg" / "r"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "exact" and summary["status"] == "tested"
    assert summary["best_checkpoint"] and (run / "samples" / "principal_subspace.png").is_file()
    # the checkpoint holds the solution: reloading it reproduces the exact val NLL logged in training
    ckpt = torch.load(summary["best_checkpoint"], weights_only=False)
    model = {"PPCA": PPCA, "FactorAnalysis": FactorAnalysis}[cls]((64,), latent_dim=8)
    model.load_state_dict(ckpt["state_dict"])
    from lightning_gm.data import DigitsDataModule

    dm = DigitsDataModule(dequantize=True)
    dm.setup()
    val_x = dm.splits["val"][0]
    assert (-model.log_prob(val_x).mean()).item() == pytest.approx(summary["fit_metrics"]["val/nll"], abs=1e-3)
    t = summary["test"]
    assert t["test/bpd"] == pytest.approx((t["test/nll"] + 64 * torch.log(torch.tensor(17.0)).item()) / (64 * 0.6931471805599453), rel=1e-5)
    if cls == "FactorAnalysis":
        em = [float(r["fit/em_log_likelihood"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("fit/em_log_likelihood")]
        assert len(em) > 2 and all(b >= a - 1e-9 for a, b in zip(em, em[1:]))

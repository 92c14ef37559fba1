"""DecoderAISEvaluation on a VAE with a linear-Gaussian decoder, whose ``log p(x)`` is known exactly, through a
real test loop (inference mode, blocks of examples, the IWAE evaluation beside it); clear errors otherwise."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.estimators.decoder_ais import HMCAnnealing
from lightning_gm.callbacks import DecoderAISEvaluation, IWAEEvaluation
from lightning_gm.callbacks.registry import evaluations_for
from lightning_gm.estimators.seeded import IWEvaluation
from lightning_gm.callbacks.decoder_ais import decoder_log_likelihood_fn
from lightning_gm.errors import ConfigError
from lightning_gm.models.vae import VAE, HierarchicalVAE
from lightning_gm.nn.likelihoods import GaussianLikelihood
from lightning_gm.nn.priors import MixtureOfGaussians

LATENT, DIM, SIGMA = 2, 5, 0.5


def linear_vae(seed: int = 0) -> VAE:
    """A VAE whose decoder is one linear layer and whose likelihood is N(x; Wz + b, 0.5^2 I)."""
    torch.manual_seed(seed)
    return VAE(data_shape=(DIM,), latent_dim=LATENT, hidden=(8,), decoder=lambda i, o: nn.Linear(i, o),
               likelihood=GaussianLikelihood(learn_variance=False, sigma=SIGMA), evaluation=IWEvaluation(test_k=200))


def exact_log_prob(model: VAE, x: Tensor) -> Tensor:
    W, b = model.decoder.weight.detach().double(), model.decoder.bias.detach().double()
    cov = W @ W.T + SIGMA**2 * torch.eye(DIM, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x.double())


def data(model: VAE, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(n, LATENT, generator=g)
        x = model.decoder(z) + SIGMA * torch.randn(n, DIM, generator=g)
    return TensorDataset(x, torch.zeros(n))


def run_test(model: VAE, ds: TensorDataset, cb: DecoderAISEvaluation, root) -> dict[str, float]:
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(root), callbacks=[cb, *evaluations_for(model)])
    return trainer.test(model, dataloaders=DataLoader(ds, batch_size=4), verbose=False)[0]


def test_linear_gaussian_vae_gets_its_exact_log_prob(tmp_path):
    """Through a real test loop (inference mode), with the VAE's own Gaussian likelihood: AIS recovers
    log N(x; b, WW' + sigma^2 I) per example; the model's own IWAE evaluation runs beside it."""
    model, n, observation = linear_vae(), 5, "model"
    ds = data(model, 8)
    cb = DecoderAISEvaluation(ais=HMCAnnealing(chains=128, steps=1500, leapfrog_steps=2, step_size=0.1), test_examples=n,
                              observation=observation, batch_size=n, progress=False)
    logged = run_test(model, ds, cb, tmp_path)
    exact = exact_log_prob(model, ds.tensors[0][:n])
    assert cb.per_example is not None and cb.per_example.shape == (n,)
    assert (cb.per_example - exact).abs().max() < 0.1
    assert logged["test/nll_ais_decoder"] == pytest.approx(-float(cb.per_example.mean()), abs=1e-4)
    assert logged["test/ais_decoder_examples"] == n and 0.3 < logged["test/ais_decoder_accept_rate"] < 1.0
    assert "test/ais_decoder_sigma" not in logged  # only stated for the Gaussian observation model
    iwae = next(c for c in model.trainer.callbacks if isinstance(c, IWAEEvaluation))
    assert iwae.per_example is not None and iwae.per_example.shape == (8,)  # per-example NLL, all 8 examples
    saved = torch.load(tmp_path / "ais_decoder" / "test.pt")
    assert saved["estimator"] == cb.estimator == "ais-decoder"
    assert saved["log_weights"].shape == (n, 128) and torch.equal(saved["log_prob"], cb.per_example)


def test_observation_models_agree_with_the_models_likelihood():
    """``gaussian`` (decoder mean + stated sigma) on the linear-Gaussian VAE and ``bernoulli`` (logit of the mean) on
    a Bernoulli VAE give the same log p(x|z) as the model's own likelihood (``model``)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, LATENT, generator=g)
    gauss = linear_vae()
    x = torch.randn(7, DIM, generator=g)
    want = gauss.likelihood.log_prob(x, gauss.decode(z))
    for obs in ("model", "gaussian"):
        got = decoder_log_likelihood_fn(gauss, obs, SIGMA)(z, x)  # type: ignore[arg-type]
        assert torch.allclose(got, want, atol=1e-4), obs
    bern = VAE(data_shape=(DIM,), latent_dim=LATENT, hidden=(8,))
    xb = torch.bernoulli(torch.full((7, DIM), 0.5), generator=g)
    want = bern.likelihood.log_prob(xb, bern.decode(z))
    for obs in ("model", "bernoulli"):
        assert torch.allclose(decoder_log_likelihood_fn(bern, obs)(z, xb), want, atol=1e-4), obs  # type: ignore[arg-type]


def test_blocks_are_seeded_and_reproducible(tmp_path):
    """Same seed and blocks: identical numbers; block ``j`` uses seed ``(seed, j)``, so another seed changes them."""
    model = linear_vae()
    ds = data(model, 6)

    def per_example(seed: int) -> Tensor:
        cb = DecoderAISEvaluation(ais=HMCAnnealing(chains=4, steps=10, leapfrog_steps=2, seed=seed), test_examples=0,
                                  batch_size=4, progress=False, save=False)
        run_test(model, ds, cb, tmp_path)
        assert cb.per_example is not None
        return cb.per_example

    a, b, c = per_example(0), per_example(0), per_example(1)
    assert a.shape == (6,) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"test_examples": -1}, "test_examples"),
        ({"batch_size": 0}, "batch_size"),
        ({"observation": "poisson"}, "observation"),
        ({"observation": "gaussian"}, "obs_sigma"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict, name: str):
    with pytest.raises(ConfigError, match=f"DecoderAISEvaluation.{name}"):
        DecoderAISEvaluation(**kwargs)
    with pytest.raises(ValueError, match=r"^ais\.chains must be >= 1"):
        DecoderAISEvaluation(ais=dict(chains=0))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VAE(data_shape=(DIM,), latent_dim=LATENT, hidden=(8,), prior=MixtureOfGaussians(3)),
         "standard normal prior"),
        (lambda: HierarchicalVAE(data_shape=(DIM,), latent_dims=(3, 2), hidden=((8,), (8,))), "decoder_log_likelihood"),
    ],
)
def test_models_it_cannot_anneal_are_refused_before_the_test(make, match: str, tmp_path):
    model = make()
    ds = TensorDataset(torch.rand(4, DIM).round(), torch.zeros(4))
    with pytest.raises(ConfigError, match=match):
        run_test(model, ds, DecoderAISEvaluation(ais=HMCAnnealing(steps=2), progress=False), tmp_path)

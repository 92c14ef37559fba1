"""The density network against a model with a known marginal: a linear-Gaussian decoder, whose
p(x) = N(b, W W' + s^2 I) is given exactly by :func:`lightning_gm.nn.linear_gaussian.log_marginal`."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.models import DensityNetwork
from lightning_gm.models.density_network import PriorSamples, effective_sample_size
from lightning_gm.nn import GaussianLikelihood
from lightning_gm.nn import linear_gaussian as lg


def _linear(D: int, L: int = 2, sigma: float = 0.7, seed: int = 0, n: int = 300, **kw) -> tuple[DensityNetwork, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = DensityNetwork((D,), latent_dim=L, hidden=(), likelihood=GaussianLikelihood(learn_variance=False, sigma=sigma),
                           **kw).double()
    W, b = model.decoder[0].weight.detach(), model.decoder[0].bias.detach()
    psi = torch.full((D,), sigma**2, dtype=torch.float64)
    x = lg.sample(n, W, b, psi, generator=torch.Generator().manual_seed(seed + 1))
    return model, x, lg.log_marginal(x, W, b, psi)


@pytest.mark.parametrize("D,seed", [(3, 0), (5, 1)])
def test_estimate_converges_to_the_exact_marginal_as_s_grows(D, seed):
    model, x, exact = _linear(D, seed=seed, samples=PriorSamples(chunk=500))
    torch.manual_seed(seed)
    gaps = {}
    for S in (1, 10, 100, 20_000):
        model.samples = model.samples.replace(test=S)
        gaps[S] = (exact - model.log_prob(x)).mean().item()  # >= 0 in expectation (Jensen)
    assert gaps[1] > gaps[10] > gaps[100] > gaps[20_000] - 0.005, gaps
    assert gaps[1] > 0.3 and abs(gaps[20_000]) < 0.02, gaps
    assert model.estimator == "prior-20000"


def test_training_loss_is_the_log_mean_exp_over_prior_samples():
    model, x, exact = _linear(3, n=100, samples=PriorSamples(train=20_000, chunk=5000))
    terms = model.loss_terms(x, "train")
    assert terms["loss"].requires_grad
    assert terms["loss"].item() == pytest.approx(-exact.mean().item(), abs=0.03)
    assert 1.0 <= terms["ess"].item() <= 20_000 and 0 < terms["max_weight"].item() <= 1
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_effective_sample_size_extremes():
    S = 64
    assert effective_sample_size(torch.zeros(S, 3)).tolist() == pytest.approx([S] * 3)
    one = torch.full((S,), -1e4)
    one[5] = 0.0
    assert effective_sample_size(one).item() == pytest.approx(1.0)
    # two equal weights: ESS = 2 whatever the common scale
    two = torch.full((S,), -math.inf, dtype=torch.float64)
    two[[1, 9]] = 123.0
    assert effective_sample_size(two).item() == pytest.approx(2.0)


def test_prior_weights_collapse_as_the_dimension_grows():
    """The failure the logs show: with the same S, the effective sample size falls with D."""
    ess = {}
    for D in (2, 20, 200):
        model, x, _ = _linear(D, L=2, sigma=0.3, n=100, samples=PriorSamples(val=1000, chunk=1000))
        torch.manual_seed(0)
        ess[D] = model.loss_terms(x, "val")["ess"].item()
    assert ess[2] > 5 * ess[20] > 0 and ess[20] > ess[200], ess
    assert ess[200] < 10.0, ess  # < 1% of the 1000 samples carry the estimate


def test_an_old_checkpoint_with_flat_sample_counts_loads_into_the_group(tmp_path):
    """Checkpoints written before ``samples`` (flat ``num_samples``, ``test_samples``, ...) load with them in the
    group (the estimator label follows), and a bad count names its key."""
    import lightning.pytorch as pl

    model = DensityNetwork((4,), latent_dim=2, hidden=(3,))
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"] = dict(data_shape=[4], latent_dim=2, hidden=[3], activation="tanh", init="torch",
                                    num_samples=7, val_samples=8, test_samples=9, chunk_size=3)
    torch.save(ckpt, path)
    loaded = DensityNetwork.load_from_checkpoint(path)
    assert loaded.samples == PriorSamples(train=7, val=8, test=9, chunk=3) and loaded.estimator == "prior-9"
    with pytest.raises(ValueError, match=r"model.init_args.samples.test must be >= 1, got 0"):
        DensityNetwork((4,), samples={"test": 0})

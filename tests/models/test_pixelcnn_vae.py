"""A VAE with a PixelCNN decoder (``VAE(likelihood=PixelCNNLikelihood(...))``) against exact answers on a
3x3 binary image with a 1-D latent: log p(x) by quadrature over z (checked to normalise over all 512 images),
ELBO <= IWAE_k <= log p(x) in expectation, IWAE -> log p(x) as k grows; and a fast_dev_run through the CLI."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lightning_gm.estimators.seeded import IWEvaluation
from lightning_gm.models import VAE
from lightning_gm.nn import PixelCNNLikelihood
from lightning_gm.nn.distributions import log_normal_diag, log_standard_normal
from tests.conftest import ROOT


def _tiny(gated: bool, seed: int) -> VAE:
    torch.manual_seed(seed)
    lik = PixelCNNLikelihood(cond_channels=1, channels=4, n_layers=2, kernel_size=3, first_kernel_size=3,
                             gated=gated, head_channels=4)
    vae = VAE(data_shape=(1, 3, 3), latent_dim=1, hidden=(8,), likelihood=lik, evaluation=IWEvaluation(test_k=50),
              init="torch")  # PyTorch's init, random biases: a posterior far from exact for every x
    with torch.no_grad():  # make p(x|z) depend strongly on z, so the posterior is far from the prior
        vae.decoder[-1].weight.mul_(4.0)
    return vae.double().eval()


IMAGES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.float64).view(512, 1, 3, 3)
#: trapezoid grid over z: the integrand N(z) p(x|z) is smooth (analytic) and negligible beyond |z| = 12, so
#: the rule converges geometrically (201 and 801 points agree to 1e-8 on these models)
GRID = torch.linspace(-12.0, 12.0, 201, dtype=torch.float64)


def _quadrature(vae: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (to quadrature error) log p(x) and ELBO = E_q[log p(x,z) - log q(z|x)] per example."""
    flat = x.flatten(1)
    z = GRID.view(-1, 1, 1).expand(-1, flat.shape[0], 1)  # (G, B, 1)
    with torch.no_grad():
        log_joint = vae.log_likelihood(flat, [z]) + log_standard_normal(z)  # (G, B)
        mu, log_var = vae.encode(flat)
        log_q = log_normal_diag(z, mu, log_var)  # (G, B)
    dz = (GRID[1] - GRID[0]).item()
    w = torch.full((GRID.numel(), 1), dz, dtype=torch.float64)
    w[0] = w[-1] = dz / 2  # trapezoid weights
    log_px = torch.logsumexp(log_joint + w.log(), 0)
    elbo = ((log_q.exp() * w) * (log_joint - log_q)).sum(0)
    return log_px, elbo


@pytest.mark.parametrize("gated,seed", [(True, 0), (False, 1)])
def test_quadrature_log_px_is_normalised(gated, seed):
    vae = _tiny(gated, seed)
    log_px, elbo = _quadrature(vae, IMAGES)
    assert abs(torch.logsumexp(log_px, 0).item()) < 1e-8  # sum over all 2^9 images of p(x) = 1
    gap = log_px - elbo  # = KL(q(z|x) || p(z|x)) > 0
    assert (gap > 0).all() and gap.max() > 1e-2


@pytest.mark.parametrize("gated,seed", [(True, 2), (False, 3)])
def test_iwae_is_a_lower_bound_that_tightens_towards_exact_log_px(gated, seed):
    """E[IWAE_1] = ELBO; ELBO <= E[IWAE_k] <= log p(x) (Burda et al. 2016, Thm 1); E[IWAE_2000] = log p(x)
    up to a bias far below 1e-3 here. Expectations are estimated from R independent replicates and compared
    with 5 standard errors."""
    vae = _tiny(gated, seed)
    x = IMAGES[torch.tensor([0, 37, 200, 511])]
    log_px, elbo = _quadrature(vae, x)
    torch.manual_seed(seed)
    reps = 300
    with torch.no_grad():
        means = {}
        for k in (1, 10):
            est = torch.stack([vae.iw_log_prob(x, k) for _ in range(reps)])  # (R, B)
            means[k] = est.mean(0)
            se = est.std(0) / math.sqrt(reps)
            assert (means[k] <= log_px + 5 * se).all(), (k, means[k], log_px, se)
            assert (means[k] >= elbo - 5 * se).all(), (k, means[k], elbo, se)
            if k == 1:
                assert ((means[k] - elbo).abs() < 5 * se).all()
        assert (means[10] > means[1]).all()
        big = torch.stack([vae.iw_log_prob(x, 2000) for _ in range(10)])
    se = big.std(0) / math.sqrt(big.shape[0])
    assert ((big.mean(0) - log_px).abs() < 5 * se + 1e-3).all(), (big.mean(0), log_px, se)
    assert (se < 0.01).all()


def test_model_interface_with_a_pixelcnn_decoder():
    vae = _tiny(True, 4)
    x = IMAGES[:5]
    terms = vae.train().loss_terms(x.float().double(), "train")
    assert set(terms) >= {"loss", "elbo", "reconstruction", "kl"} and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(p.grad is not None for p in vae.likelihood.parameters())  # the PixelCNN is trained
    vae.eval()
    assert vae.estimator == "iwae-50"
    assert vae.log_prob(x).shape == (5,)
    s = vae.sample(7)
    assert s.shape == (7, 1, 3, 3) and ((s > 0) & (s < 1)).all()  # probabilities along a sampled path
    assert vae.reconstruct(x).shape == x.shape


def test_fast_dev_run_on_digits(run_cli, tmp_path):
    """The shipped architecture knobs through the CLI on 8x8 digits (one batch of fit and test)."""
    code = run_cli(
        "fit", "--config", str(ROOT / "conf" / "vae_digits.yaml"),
        "--runs_dir", str(tmp_path / "runs"), "--trainer.fast_dev_run=1", "--trainer.logger=false",
        "--trainer.callbacks=[]",
        "--model.init_args.likelihood=lightning_gm.nn.PixelCNNLikelihood",
        "--model.init_args.likelihood.init_args.channels=4", "--model.init_args.likelihood.init_args.n_layers=2",
        "--model.init_args.evaluation.test_k=5", "--model.init_args.objective.free_bits=0.1",
    )
    assert code == 0

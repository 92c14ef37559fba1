"""The VAE's maths against exact answers: analytic KL, a linear-Gaussian model's exact marginal."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gm.estimators import importance_weighted_log_prob
from lightning_gm.models import VAE
from lightning_gm.models.vae import kl_warmup_weight
from lightning_gm.nn import GaussianLikelihood
from lightning_gm.nn.distributions import kl_normal_std_normal, log_normal_diag, log_standard_normal, reparameterize


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, log_var = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    z = reparameterize(mu, log_var, n=200_000)
    diff = log_normal_diag(z, mu, log_var) - log_standard_normal(z)  # (n, 4)
    mc, se = diff.mean(0), diff.std(0) / math.sqrt(diff.shape[0])
    exact = kl_normal_std_normal(mu, log_var)
    assert ((mc - exact).abs() < 5 * se).all(), (mc, exact, se)
    assert torch.allclose(kl_normal_std_normal(torch.zeros(3), torch.zeros(3)), torch.tensor(0.0))


def _linear_gaussian_vae(D: int = 5, L: int = 2, sigma: float = 0.5) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """A VAE whose decoder is linear with orthogonal columns, so p(x) and p(z|x) are known exactly:
    p(x) = N(b, W W' + s^2 I), p(z|x) = N(M^-1 W'(x - b)/s^2, M^-1), M = I + W'W/s^2 (diagonal)."""
    torch.manual_seed(1)
    vae = VAE(data_shape=(D,), latent_dim=L, hidden=(), likelihood=GaussianLikelihood(learn_variance=False, sigma=sigma))
    vae = vae.double()
    q, _ = torch.linalg.qr(torch.randn(D, L, dtype=torch.float64))
    W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:L]
    b = torch.randn(D, dtype=torch.float64)
    dec = vae.decoder[0]
    dec.weight.data.copy_(W), dec.bias.data.copy_(b)
    M = torch.eye(L, dtype=torch.float64) + W.T @ W / sigma**2
    post_cov = torch.linalg.inv(M)
    enc = vae.encoder[0]
    enc.weight.data.zero_(), enc.bias.data.zero_()
    enc.weight.data[:L] = post_cov @ W.T / sigma**2
    enc.bias.data[:L] = -(post_cov @ W.T @ b) / sigma**2
    enc.bias.data[L:] = torch.log(torch.diagonal(post_cov))
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(D, dtype=torch.float64))
    x = marginal.sample((256,))
    return vae, x, marginal.log_prob(x)


def test_exact_posterior_makes_every_weight_equal_log_px():
    vae, x, exact = _linear_gaussian_vae()
    lw = vae.log_weights(x, 7)  # (7, 256)
    assert torch.allclose(lw, exact.expand(7, -1), atol=1e-9)
    assert torch.allclose(vae.iw_log_prob(x, 3), exact, atol=1e-9)


def test_iw_bound_rises_with_k_towards_exact_log_px():
    vae, x, exact = _linear_gaussian_vae()
    with torch.no_grad():  # a worse encoder: shifted means, too-wide variances
        vae.encoder[0].bias.data[:2] += 0.4
        vae.encoder[0].bias.data[2:] += 0.7
    gaps = [(exact - vae.iw_log_prob(x, k)).mean().item() for k in (1, 10, 5000)]
    # E[L_1] <= E[L_10] <= E[L_5000] <= log p(x); the first gap is the KL(q || p(z|x)), over a nat here
    assert gaps[0] > gaps[1] > gaps[2] and gaps[0] > 1.0, gaps
    assert abs(gaps[2]) < 0.01, gaps
    # the single-sample bound is the ELBO: its expectation is the analytic ELBO, which sits below log p(x)
    est = importance_weighted_log_prob(vae.log_weights, x, 20000, chunk_size=1000)
    assert (est.elbo < exact).all() and (est.log_prob - exact).mean() < 0.01


def test_chunked_equals_unchunked():
    vae, x, _ = _linear_gaussian_vae()
    with torch.no_grad():
        vae.encoder[0].bias.data[:2] += 0.5
    torch.manual_seed(5)
    whole = importance_weighted_log_prob(vae.log_weights, x, 300)
    torch.manual_seed(5)
    chunked = importance_weighted_log_prob(vae.log_weights, x, 300, chunk_size=7)
    assert torch.allclose(whole.log_prob, chunked.log_prob, atol=1e-10)
    assert torch.allclose(whole.elbo, chunked.elbo, atol=1e-10)


def test_loss_terms_are_consistent():
    torch.manual_seed(0)
    vae = VAE(data_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
    x = torch.bernoulli(torch.full((10, 1, 8, 8), 0.3))
    t = vae.loss_terms(x, "val")
    assert torch.allclose(t["elbo"], t["reconstruction"] - t["kl"])
    assert torch.allclose(t["loss"], -t["elbo"])  # beta = 1 and no warm-up
    assert vae.sample(4).shape == (4, 1, 8, 8) and vae.reconstruct(x).shape == x.shape
    assert vae.estimator == "iwae-5000"


def test_kl_warmup_weight():
    for step, expected in ((0, 0.0), (5, 0.125), (10, 0.25), (20, 0.5), (40, 0.5)):
        assert kl_warmup_weight(0.5, 2, step, 10) == pytest.approx(expected)
    assert kl_warmup_weight(0.7, 0, 3, 10) == 0.7


# --- the VAE family (issue 6) ------------------------------------------------------------------------------
from lightning_gm.estimators.seeded import (  # noqa: E402
    IWEvaluation,
    SeededNoise,
    active_units,
    example_generator,
    seeded_importance_weighted,
)
from lightning_gm.models.vae import Objective  # noqa: E402
from lightning_gm.estimators.importance import log_mean_exp  # noqa: E402
from lightning_gm.models import HierarchicalVAE  # noqa: E402
from lightning_gm.nn import IAFPosterior, PlanarPosterior  # noqa: E402
from lightning_gm.errors import ConfigError  # noqa: E402


def _linear_gaussian_chain(sigma: float = 0.5):
    """z2 ~ N(0, 1), z1 | z2 ~ N(A z2 + a, diag d), x | z1 ~ N(W z1 + b, s^2 I) with A = (alpha, 0) and W
    orthogonal columns, so p(x) = N(W a + b, W (A A' + diag d) W' + s^2 I) and the true posteriors p(z1|x)
    and p(z2|z1) are diagonal Gaussians linear in their inputs: a 2-layer VAE can hold them exactly."""
    torch.manual_seed(2)
    D, (L1, L2) = 5, (2, 1)
    vae = HierarchicalVAE(data_shape=(D,), latent_dims=(L1, L2), hidden=((), ()),
                          likelihood=GaussianLikelihood(learn_variance=False, sigma=sigma)).double()
    f64 = dict(dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(D, L1, **f64))
    W, b = q * torch.tensor([1.5, 0.8], **f64), torch.randn(D, **f64)
    alpha, a, d = 1.2, torch.tensor([0.3, -0.5], **f64), torch.tensor([0.4, 0.9], **f64)
    cov1 = torch.diag(d + torch.tensor([alpha**2, 0.0], **f64))  # Cov(z1), diagonal
    with torch.no_grad():
        vae.decoder[0].weight.copy_(W), vae.decoder[0].bias.copy_(b)
        cond = vae.conditionals[0][0]  # z2 -> (mu1, log_var1)
        cond.weight.zero_(), cond.weight[0, 0].fill_(alpha)
        cond.bias.copy_(torch.cat([a, d.log()]))
        # q(z1 | x) = p(z1 | x): precision P = Cov(z1)^-1 + W'W / s^2 (diagonal)
        P = torch.linalg.inv(cov1) + W.T @ W / sigma**2
        S = torch.linalg.inv(P)
        e1 = vae.encoders[0][0]
        e1.weight.zero_(), e1.weight[:L1].copy_(S @ W.T / sigma**2)
        e1.bias.copy_(torch.cat([S @ (torch.linalg.inv(cov1) @ a - W.T @ b / sigma**2), torch.diagonal(S).log()]))
        # q(z2 | z1) = p(z2 | z1): precision 1 + alpha^2 / d0
        p2 = 1 + alpha**2 / d[0]
        e2 = vae.encoders[1][0]
        e2.weight.zero_(), e2.weight[0, 0].fill_(alpha / d[0] / p2)
        e2.bias.copy_(torch.tensor([-alpha * a[0] / d[0] / p2, -math.log(p2)], **f64))
    marginal = torch.distributions.MultivariateNormal(W @ a + b, W @ cov1 @ W.T + sigma**2 * torch.eye(D, **f64))
    x = marginal.sample((128,))
    return vae, x, marginal.log_prob(x)


def test_two_layer_exact_posterior_makes_every_weight_equal_log_px():
    vae, x, exact = _linear_gaussian_chain()
    lw = vae.log_weights(x, 6)
    assert torch.allclose(lw, exact.expand(6, -1), atol=1e-9)


def test_two_layer_iw_bound_rises_with_k_towards_exact_log_px():
    vae, x, exact = _linear_gaussian_chain()
    with torch.no_grad():
        vae.encoders[0][0].bias[:2] += 0.5  # a worse q(z1|x)
        vae.encoders[1][0].bias[1:] += 1.0  # a too-wide q(z2|z1)
    gaps = [(exact - vae.iw_log_prob(x, k)).mean().item() for k in (1, 10, 5000)]
    assert gaps[0] > gaps[1] > gaps[2] > -0.01 and gaps[0] > 0.3, gaps
    assert gaps[2] < 0.02, gaps


@pytest.mark.parametrize("model", ["vae", "hierarchical"])
@pytest.mark.parametrize("k", [1, 7])
def test_training_objective_is_the_k_sample_bound(model, k):
    vae, x, _ = _linear_gaussian_vae() if model == "vae" else _linear_gaussian_chain()
    vae.objective = Objective(train_k=k)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(3)
    loss = vae.loss_terms(x, "train")["loss"]
    torch.manual_seed(3)
    lw = vae.log_weights(x, k)
    if k == 1 and model == "vae":  # analytic KL: the expectation of the same estimator
        torch.manual_seed(3)
        z = vae.posterior(x, 1).z[0]
        rec = vae.likelihood.log_prob(x, vae.decode(z))[0]
        torch.testing.assert_close(loss, -(rec - vae.kl_analytic(x)).mean())
    else:
        torch.testing.assert_close(loss, -log_mean_exp(lw, 0).mean())


def test_free_bits_floor_each_dimension():
    vae, x, _ = _linear_gaussian_vae()
    vae.objective = Objective(free_bits=50.0)  # above every per-dimension KL: the KL term is a constant L * lambda
    torch.manual_seed(0)
    t = vae.loss_terms(x, "train")
    torch.testing.assert_close(t["loss"], -(t["reconstruction"] - 2 * 50.0))
    with pytest.raises(ValueError, match="model.init_args.objective.free_bits=1.0 needs the single-sample ELBO"):
        VAE(data_shape=(4,), objective=Objective(free_bits=1.0, train_k=5))


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_flow_log_det_enters_log_q(flow):
    torch.manual_seed(0)
    ctx = 3 if flow == "iaf" else 0
    factory = (lambda l, c: PlanarPosterior(l, c, 3)) if flow == "planar" else (lambda l, c: IAFPosterior(l, c, 2, (12,)))
    vae = VAE(data_shape=(6,), latent_dim=3, hidden=(8,), posterior_flow=factory, context_features=ctx).double()
    with torch.no_grad():
        for p in vae.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(4, 6, dtype=torch.float64).bernoulli()
    lat = vae.posterior(x, 1, [example_generator(0, i) for i in range(4)])
    mu, log_var, h = vae._encode_all(x)
    gens = [example_generator(0, i) for i in range(4)]
    z0 = mu + torch.exp(0.5 * log_var) * torch.stack([torch.randn(1, 3, generator=g, dtype=torch.float64) for g in gens], 1)
    for b in range(4):
        jac = torch.autograd.functional.jacobian(lambda z: vae.flow(z[None], h[b : b + 1] if ctx else None)[0][0], z0[0, b])
        expected = log_normal_diag(z0[0, b], mu[b], log_var[b]) - torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(lat.log_q[0][0, b], expected, rtol=0, atol=1e-9)
    assert lat.analytic_kl is None  # with a flow the KL is estimated


@pytest.mark.parametrize("model", ["vae", "hierarchical"])
def test_seeded_evaluation_depends_only_on_seed_and_index(model):
    vae, x, _ = _linear_gaussian_vae() if model == "vae" else _linear_gaussian_chain()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = x[:12]
    whole = seeded_importance_weighted(vae.log_weights, x, range(12), 300, seed=4, block=4, sample_block=50)
    # the blocks evaluated apart (another batch, another process): the same numbers, bit for bit
    for lo in (0, 4, 8):
        part = seeded_importance_weighted(vae.log_weights, x[lo : lo + 4], range(lo, lo + 4), 300, seed=4, block=4,
                                          sample_block=50)
        assert torch.equal(part.log_prob, whole.log_prob[lo : lo + 4]) and torch.equal(part.elbo, whole.elbo[lo : lo + 4])
    # other blocks: the same noise per example, so the same numbers up to rounding
    perm = torch.randperm(12)
    again = seeded_importance_weighted(vae.log_weights, x[perm], perm.tolist(), 300, seed=4, block=4, sample_block=50)
    torch.testing.assert_close(again.log_prob, whole.log_prob[perm], rtol=0, atol=1e-9)
    torch.testing.assert_close(again.elbo, whole.elbo[perm], rtol=0, atol=1e-9)
    other = seeded_importance_weighted(vae.log_weights, x, range(12), 300, seed=5, block=4, sample_block=50)
    assert (other.log_prob - whole.log_prob).abs().max() > 1e-6


def test_active_units_counts_posterior_means_that_vary():
    torch.manual_seed(0)
    means = torch.stack([torch.randn(1000), 0.05 * torch.randn(1000), 0.2 * torch.randn(1000), torch.zeros(1000)], 1)
    n, activity = active_units(means)  # variances about 1, 0.0025, 0.04, 0
    assert n == 2 and activity[1] < 1e-2 < activity[2]
    vae, x, _ = _linear_gaussian_vae()
    with torch.no_grad():
        vae.encoder[0].weight[1].zero_()  # the second latent's mean no longer depends on x
    assert active_units(vae.posterior_means(x)[0])[0] == 1


def test_hierarchical_refuses_a_prior_that_needs_an_encoder():
    from lightning_gm.nn import VampPrior

    with pytest.raises(ConfigError, match="VampPrior"):
        HierarchicalVAE(data_shape=(4,), latent_dims=(3, 2), hidden=((4,), (4,)), prior=VampPrior(3))


def test_vampprior_vae_kl_uses_the_same_z_and_the_models_encoder_and_pseudo_inputs_are_optimised():
    """With a VampPrior the k=1 KL is log q(z|x) - log (1/K sum_k N(z; mu(u_k), var(u_k))) at the same z, the
    components come from the model's own encoder (its current weights and mode), and the pseudo-inputs are
    in the optimiser with the model's learning rate and move on a step."""
    from functools import partial

    from lightning_gm.nn import VampPrior

    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=3, hidden=(5,), prior=VampPrior(4, init_mean=0.3, init_std=0.2),
              optimizer=partial(torch.optim.Adam, lr=0.003)).double()
    x = torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64))
    torch.manual_seed(1)
    terms = vae.loss_terms(x, "val")
    torch.manual_seed(1)
    mu, log_var = vae.encode(x)
    z = mu + torch.exp(0.5 * log_var) * torch.randn(1, 7, 3, dtype=torch.float64)  # the draw loss_terms made
    u = vae.prior.pseudo_inputs
    cm, clv = vae.encoder(u)[:, :3], vae.encoder(u)[:, 3:6]  # the model's encoder on the pseudo-inputs
    log_p = torch.logsumexp(
        torch.stack([log_normal_diag(z, cm[k], clv[k]) for k in range(4)], -1), -1) - math.log(4)
    kl = (log_normal_diag(z, mu, log_var) - log_p)[0]
    rec = vae.likelihood.log_prob(x, vae.decoder(z))[0]
    torch.testing.assert_close(terms["kl"], kl.mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["elbo"], (rec - kl).mean(), rtol=0, atol=1e-12)
    # the prior follows the encoder's weights (no copy)
    with torch.no_grad():
        vae.encoder[0].bias.add_(0.5)
    torch.testing.assert_close(vae.prior.components()[0], vae.encode(u)[0], rtol=0, atol=0)
    # the pseudo-inputs are optimised, with the same lr as the networks
    opt = vae.configure_optimizers()
    groups = [g for g in opt.param_groups if any(p is u for p in g["params"])]
    assert len(groups) == 1 and groups[0]["lr"] == 0.003 and all(g["lr"] == 0.003 for g in opt.param_groups)
    before = u.detach().clone()
    opt.zero_grad()
    vae.loss_terms(x, "val")["loss"].backward()
    opt.step()
    assert u.grad is not None and float((u.detach() - before).abs().max()) == pytest.approx(0.003, rel=1e-6)


# --- initialisation from the data (Burda et al.'s output bias) ---------------------------------------------------
@pytest.mark.parametrize("model", ["vae", "hierarchical"])
def test_output_bias_starts_at_the_logit_of_the_training_pixel_means(model):
    """data_mean_bias: before the first update the decoder's output is logit(mean) (clipped to [0.001, 0.999]) at
    zero hidden activity, so the model starts as the independent-pixel model of the training data."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_gm.models import HierarchicalVAE

    torch.manual_seed(0)
    probs = torch.linspace(0.0, 1.0, 12)
    x = torch.bernoulli(probs.expand(40, 12))
    kw = dict(data_shape=(12,), hidden=((6,), (4,)) if model == "hierarchical" else (6,), data_mean_bias=True,
              update_batch_size=None)
    vae = HierarchicalVAE(latent_dims=(3, 2), **kw) if model == "hierarchical" else VAE(latent_dim=2, **kw)

    class Capture(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 0:
                self.bias = module.output_layer().bias.detach().clone()

    cap = Capture()
    pl.Trainer(max_epochs=1, callbacks=[cap], logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(vae, DataLoader(TensorDataset(x), batch_size=16))
    m = x.mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(cap.bias, torch.log(m / (1 - m)))
    assert float(cap.bias[0]) == pytest.approx(math.log(1e-3 / (1 - 1e-3)), rel=1e-5)  # an all-zero pixel: clipped


def test_output_bias_from_the_data_needs_a_linear_output_and_a_likelihood_that_has_it():
    from lightning_gm.errors import ConfigError
    from lightning_gm.nn import ConvDecoder, DiscretizedLogisticLikelihood

    with pytest.raises(ConfigError, match="data_mean_bias needs a decoder ending in a linear layer"):
        VAE(data_shape=(1, 8, 8), latent_dim=2, data_mean_bias=True,
            decoder=lambda i, o: ConvDecoder(i, o, image_shape=(1, 8, 8), channels=(4,)))
    with pytest.raises(ConfigError, match="DiscretizedLogisticLikelihood has no parameters-at-the-data-mean"):
        VAE(data_shape=(4,), latent_dim=2, hidden=(3,), likelihood=DiscretizedLogisticLikelihood(),
            data_mean_bias=True)


# --- the batched seeded evaluation (issue 18) ------------------------------------------------------------------
def test_batched_evaluation_converges_to_the_exact_marginal_of_a_linear_gaussian_model():
    """On the linear-Gaussian VAE with a deliberately poor encoder: the batched, seeded k-sample bound is below
    log p(x) in expectation, rises with k and meets the exact marginal at k = 20,000 (mean gap < 0.01 nats)."""
    vae, x, exact = _linear_gaussian_vae()
    with torch.no_grad():
        vae.encoder[0].bias.data[:2] += 0.4
        vae.encoder[0].bias.data[2:] += 0.7
    gaps = {}
    for k in (1, 10, 20_000):
        est = seeded_importance_weighted(vae.log_weights, x, range(len(x)), k, seed=0, block=256, sample_block=500)
        gaps[k] = float((exact - est.log_prob).mean())
    assert gaps[1] > gaps[10] > gaps[20_000] and gaps[1] > 1.0, gaps
    assert abs(gaps[20_000]) < 0.01, gaps


def test_seeded_noise_is_the_same_whatever_the_batch_and_the_chunk():
    """Example i's sample block j comes from the generator of (seed, i, j) only: drawing 2 blocks for 3 examples at
    once equals drawing each example's blocks alone, and two layers drawn in turn keep their order per block."""
    like = torch.zeros(1, dtype=torch.float64)
    both = SeededNoise(7, [4, 9, 2], 0, 20, 10)
    a1, a2 = both.normal(20, 3, like), both.normal(20, 5, like)
    for b, i in enumerate([4, 9, 2]):
        for j in range(2):
            one = SeededNoise(7, [i], 10 * j, 10, 10)
            torch.testing.assert_close(one.normal(10, 3, like)[:, 0], a1[10 * j : 10 * (j + 1), b], rtol=0, atol=0)
            torch.testing.assert_close(one.normal(10, 5, like)[:, 0], a2[10 * j : 10 * (j + 1), b], rtol=0, atol=0)
    with pytest.raises(ValueError, match="whole sample block"):
        SeededNoise(7, [0], 5, 10, 10)


def test_evaluation_group_checks_and_labels():
    with pytest.raises(ValueError, match="model.init_args.evaluation.test_k must be >= 1"):
        IWEvaluation(test_k=0)
    with pytest.raises(ValueError, match="model.init_args.evaluation.subset"):
        IWEvaluation(subset=0)
    ev = IWEvaluation(test_k=5000)
    assert ev.label(10_000, 10_000) == "iwae-5000"
    assert ev.label(1000, 10_000) == "iwae-5000 (1,000 of 10,000, evenly spaced)"
    assert ev.label(1000, 10_000, first=1000) == "iwae-5000 (first 1,000 of 10,000)"
    assert ev.label(100, 10_000, first=1000) == "iwae-5000 (100 of 10,000, evenly spaced in the first 1,000)"


def test_flat_hyperparameters_of_old_checkpoints_still_load(tmp_path):
    """A checkpoint written before the parameter groups (flat beta, test_k, ... as main wrote them) loads into the
    grouped model, with its values in the groups and the same weights."""
    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(5,), objective=Objective(beta=0.5, kl_warmup_epochs=3),
              evaluation=IWEvaluation(test_k=77, seed=3))
    new = ("objective", "evaluation", "init", "log_var_bounds", "data_mean_bias")  # not in main's checkpoints
    hp = {k: v for k, v in dict(vae.hparams).items() if k not in new}
    hp.update(beta=0.5, kl_warmup_epochs=3, free_bits=0.0, train_k=1, val_k=0, test_k=77, chunk_size=500, eval_seed=3)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": hp, "pytorch-lightning_version": "2.6.0"}, path)
    with open(path, "rb") as f:
        from_file = VAE.load_from_checkpoint(f)
    for loaded in (VAE.load_from_checkpoint(path), VAE.load_from_checkpoint(str(path)), from_file):
        assert loaded.objective == Objective(beta=0.5, kl_warmup_epochs=3)
        assert loaded.evaluation == IWEvaluation(test_k=77, seed=3) and loaded.test_k == 77
        assert loaded.hparams["init"] == "torch" and loaded.log_var_bounds is None  # what main built
        for k, v in vae.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_fractional_warm_up_follows_the_runs_progress():
    """kl_warmup_fraction: the KL weight is beta * min(1, p / fraction) of the run's progress p, so a shorter run
    (fewer epochs, or a time budget) has the same warm-up shape: 10% of 20 epochs or 10% of 2 epochs."""
    from types import SimpleNamespace

    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(3,), objective=Objective(beta=0.8, kl_warmup_fraction=0.1))
    for max_epochs, updates in ((20, 50), (2, 50)):
        trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=-1, callbacks=[], current_epoch=0, global_step=0,
                                  num_training_batches=updates, lr_scheduler_configs=[])
        vae._trainer = trainer  # what kl_weight reads: the trainer's limits and the step
        vae.train()
        total = max_epochs * updates
        for step, expected in ((0, 0.0), (total // 20, 0.4), (total // 10, 0.8), (total // 2, 0.8)):
            trainer.global_step = step
            assert vae.kl_weight() == pytest.approx(expected), (max_epochs, step)
    vae._trainer = None
    with pytest.raises(ValueError, match="kl_warmup_epochs or kl_warmup_fraction, not both"):
        Objective(kl_warmup_epochs=3, kl_warmup_fraction=0.1)

"""GAN and GMMN: losses against the value function computed by hand, manual optimisation (which parameters
move), MMD training objective, sampling, decoder-AIS test likelihood on a linear-Gaussian generator, config errors."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.estimators.decoder_ais import HMCAnnealing
from lightning_gm.errors import ConfigError
from lightning_gm.estimators.mmd import mmd2
from lightning_gm.models import GAN, GMMN
from lightning_gm.models.gan import discriminator_loss, generator_loss, value_function
from lightning_gm.nn import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator


def _linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    lin = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight))
        lin.bias.copy_(torch.tensor(bias))
    return lin


W_D, B_D = [[1.5, -0.5]], [0.25]  # D(x) = sigmoid(1.5 x1 - 0.5 x2 + 0.25)
W_G, B_G = [[1.0], [-2.0]], [0.5, 0.0]  # G(z) = (z + 0.5, -2 z)


def _tiny_gan(kind: str) -> GAN:
    return GAN(data_shape=(2,), latent_dim=1, generator=lambda i, o: _linear(W_G, B_G),
               discriminator=lambda i, o: _linear(W_D, B_D), generator_loss=kind)


def _sig(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


@pytest.mark.parametrize("kind", ["minimax", "non_saturating"])
def test_losses_equal_the_value_function_by_hand(kind, monkeypatch):
    model = _tiny_gan(kind)
    x = [[0.0, 1.0], [2.0, -1.0], [-1.0, 0.5]]
    z = [[0.3], [-1.2]]
    d = lambda p: _sig(W_D[0][0] * p[0] + W_D[0][1] * p[1] + B_D[0])  # noqa: E731
    g = lambda zz: [zz[0] + 0.5, -2.0 * zz[0]]  # noqa: E731
    value = sum(math.log(d(p)) for p in x) / 3 + sum(math.log(1 - d(g(zz))) for zz in z) / 2
    g_expected = (sum(math.log(1 - d(g(zz))) for zz in z) / 2 if kind == "minimax"
                  else -sum(math.log(d(g(zz))) for zz in z) / 2)
    # loss_terms draws as many samples as data: give it exactly the two latents
    monkeypatch.setattr(model, "prior_noise", lambda n: torch.tensor(z))
    with torch.no_grad():
        real, fake = model.logits(torch.tensor(x)), model.logits(model.generate(torch.tensor(z)))
    assert value_function(real, fake).item() == pytest.approx(value, rel=1e-6)
    assert discriminator_loss(real, fake).item() == pytest.approx(-value, rel=1e-6)
    assert generator_loss(fake, kind).item() == pytest.approx(g_expected, rel=1e-6)
    terms = model.loss_terms(torch.tensor(x), "val")
    assert terms["value"].item() == pytest.approx(value, rel=1e-6)
    assert terms["d_loss"].item() == pytest.approx(-value, rel=1e-6)
    assert terms["g_loss"].item() == pytest.approx(g_expected, rel=1e-6)
    assert terms["d_real"].item() == pytest.approx(sum(d(p) for p in x) / 3, rel=1e-6)


def test_losses_are_stable_for_extreme_logits():
    big = torch.tensor([80.0, -80.0])
    assert torch.isfinite(value_function(big, big)) and torch.isfinite(generator_loss(big, "minimax"))
    # a confident discriminator: the minimax generator loss saturates (gradient ~ 0), the non-saturating one does not
    fake = torch.tensor([-10.0], requires_grad=True)
    (g_mm,) = torch.autograd.grad(generator_loss(fake, "minimax"), fake)
    (g_ns,) = torch.autograd.grad(generator_loss(fake, "non_saturating"), fake)
    assert abs(g_mm.item()) == pytest.approx(_sig(-10.0), rel=1e-4)
    assert abs(g_ns.item()) == pytest.approx(1 - _sig(-10.0), rel=1e-4)


def _fit(model: pl.LightningModule, n_batches: int, dim: int = 2) -> pl.Trainer:
    data = torch.randn(8 * n_batches, dim, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(data, torch.zeros(len(data))), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, loader)
    return trainer


def _params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _moved(before: list[torch.Tensor], module: nn.Module) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(before, module.parameters())]


@pytest.mark.parametrize("d_steps, n_batches", [(1, 1), (2, 1), (2, 4), (3, 6)])
def test_manual_optimisation_steps_both_players(d_steps, n_batches):
    """One discriminator step per batch, one generator step every d_steps batches; the other player's
    parameters do not move during a player's step."""
    torch.manual_seed(0)
    model = GAN(data_shape=(2,), latent_dim=3, hidden=(8,), discriminator_hidden=(8,), d_steps=d_steps,
                optimizer=lambda p: torch.optim.SGD(p, lr=0.1), discriminator_optimizer=lambda p: torch.optim.Adam(p))
    g0, d0 = _params(model.generator), _params(model.discriminator)
    trainer = _fit(model, n_batches)
    opt_g, opt_d = trainer.optimizers
    assert all(_moved(d0, model.discriminator))
    d_state = [opt_d.state[p]["step"].item() for p in model.discriminator.parameters()]
    assert d_state == [n_batches] * len(d_state)  # Adam counts its steps
    g_updates = n_batches // d_steps
    assert all(_moved(g0, model.generator)) == (g_updates > 0)
    assert not any(_moved(g0, model.generator)) == (g_updates == 0)


def test_a_generator_step_leaves_the_discriminator_alone(monkeypatch):
    torch.manual_seed(0)
    model = GAN(data_shape=(2,), latent_dim=3, hidden=(8,), discriminator_hidden=(8,),
                optimizer=lambda p: torch.optim.SGD(p, lr=0.1), discriminator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    d0, g0 = _params(model.discriminator), _params(model.generator)
    _fit(model, 2)
    assert not any(_moved(d0, model.discriminator))  # lr 0 for D: only the G steps could have moved it
    assert all(_moved(g0, model.generator))


def _step_norm(before: list[torch.Tensor], module: nn.Module) -> float:
    return torch.cat([(b - a.detach()).flatten() for a, b in zip(module.parameters(), before)]).norm().item()


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_gradient_clip_val_bounds_each_players_update(clip):
    """``gradient_clip_val`` is a model argument (Lightning does not clip under manual optimisation): with plain SGD at
    lr 1, one batch moves each player's parameters by exactly its (clipped) gradient, so the step's norm is the
    clip value when clipping, and larger than it without."""
    torch.manual_seed(0)
    sgd = lambda p: torch.optim.SGD(p, lr=1.0)  # noqa: E731
    model = GAN(data_shape=(2,), latent_dim=3, hidden=(8,), discriminator_hidden=(8,), optimizer=sgd,
                discriminator_optimizer=sgd, gradient_clip_val=clip)
    d0, g0 = _params(model.discriminator), _params(model.generator)
    _fit(model, 1)
    d_norm, g_norm = _step_norm(d0, model.discriminator), _step_norm(g0, model.generator)
    if clip is None:
        assert d_norm > 10 * 1e-3 and g_norm > 10 * 1e-3
    else:
        assert d_norm == pytest.approx(clip, rel=1e-4) and g_norm == pytest.approx(clip, rel=1e-4)


def test_a_negative_clip_value_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="model.init_args.gradient_clip_val"):
        GAN(data_shape=(2,), gradient_clip_val=-1.0)


@pytest.mark.parametrize("objective", ["mmd2", "mmd"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_gmmn_loss_is_the_batch_mmd(objective, unbiased, monkeypatch):
    torch.manual_seed(0)
    model = GMMN(data_shape=(3,), latent_dim=2, hidden=(5,), bandwidths=(0.5, 2.0), unbiased=unbiased,
                 objective=objective, num_samples=6)
    z = torch.randn(6, 2)
    monkeypatch.setattr(model, "prior_noise", lambda n: z[:n])
    x = torch.rand(4, 3)
    expected = mmd2(x, model.generate(z), (0.5, 2.0), unbiased=unbiased)
    terms = model.loss_terms(x, "train")
    assert terms["mmd2_train"].item() == pytest.approx(expected.item(), rel=1e-6)
    target = expected.item() if objective == "mmd2" else math.sqrt(max(expected.item(), 1e-12))
    assert terms["loss"].item() == pytest.approx(target, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_gmmn_training_lowers_the_mmd(seed):
    """A GMMN fitted to a shifted, scaled 2-D Gaussian: the batch MMD to fresh data falls several-fold
    (by 150-1700x over seeds 0-4; asserted: 5x)."""
    torch.manual_seed(seed)
    model = GMMN(data_shape=(2,), latent_dim=2, generator=lambda i, o: MLPGenerator(i, o, hidden=(16,), output="identity"),
                 bandwidths=(0.5, 1.0, 2.0), objective="mmd2", optimizer=lambda p: torch.optim.Adam(p, lr=0.02))
    target = lambda n: torch.randn(n, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([3.0, -1.0])  # noqa: E731
    x_eval = target(500)
    before = model.sample_mmd2(x_eval).item()
    data = target(8 * 200)
    loader = DataLoader(TensorDataset(data, torch.zeros(len(data))), batch_size=64)
    pl.Trainer(max_epochs=4, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(model, loader)
    after = model.sample_mmd2(x_eval).item()
    assert after < before / 5


NETS = {
    "mlp": dict(generator=lambda i, o: MLPGenerator(i, o, hidden=(16,)),
                discriminator=lambda i, o: MLPDiscriminator(i, o, hidden=(16,), dropout=0.2)),
    "conv": dict(generator=lambda i, o: ConvGenerator(i, o, image_shape=(1, 8, 8), channels=(8, 4)),
                 discriminator=lambda i, o: ConvDiscriminator(i, o, image_shape=(1, 8, 8), channels=(4, 8))),
}


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("family", ["gan", "gmmn"])
@pytest.mark.parametrize("data_shape", [(64,), (1, 8, 8)])
def test_sampling_shape_and_range(net, family, data_shape):
    torch.manual_seed(0)
    if family == "gan":
        model = GAN(data_shape=data_shape, latent_dim=4, **NETS[net])
        assert model.logits(torch.rand(5, 64)).shape == (5,)
    else:
        model = GMMN(data_shape=data_shape, latent_dim=4, generator=NETS[net]["generator"])
    model.train()  # sampling switches nothing: it must work in either mode, under no_grad
    s = model.sample(7)
    assert s.shape == (7, *data_shape) and not s.requires_grad
    assert s.min() >= 0 and s.max() <= 1 and s.std() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_ais_log_prob_is_exact_for_a_linear_gaussian_generator(seed):
    """x = W z + b + sigma eps is Gaussian, N(b, W W^T + sigma^2 I): the model's decoder-AIS log p(x) must
    agree, also when called under inference mode (as Lightning's test loop does)."""
    torch.manual_seed(0)
    W, b = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]]), torch.tensor([0.1, -0.2, 0.3])
    sigma = 0.5
    model = GMMN(data_shape=(3,), latent_dim=2, generator=lambda i, o: _linear(W.tolist(), b.tolist()),
                 obs_sigma=sigma, ais=HMCAnnealing(chains=64, steps=1000, leapfrog_steps=5, seed=seed))
    assert model.estimator == "ais-decoder(sigma=0.5,steps=1000)"
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]])
    z = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    by_hand = torch.distributions.Normal(z @ W.T + b, sigma).log_prob(x).sum(-1)
    assert torch.allclose(model.decoder_log_likelihood(z, x), by_hand, atol=1e-5)
    exact = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(3)).log_prob(x)
    with torch.inference_mode():
        got = model.log_prob(x)
    assert got.shape == (2,) and got.dtype == x.dtype
    assert torch.allclose(got, exact, atol=0.1)
    assert 0.3 < model.last_accept_rate < 1.0
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again
    with torch.inference_mode():
        assert torch.equal(model.log_prob(x), got)  # deterministic given ais.seed


@pytest.mark.parametrize(
    "cls, kwargs, key",
    [
        (GAN, dict(generator_loss="wasserstein"), "generator_loss"),
        (GAN, dict(d_steps=0), "d_steps"),
        (GAN, dict(obs_sigma=0.0), "obs_sigma"),
        (GAN, dict(ais=dict(chains=0)), r"ais\.chains"),
        (GAN, dict(latent_dim=0), "latent_dim"),
        (GMMN, dict(bandwidths=[]), "bandwidths"),
        (GMMN, dict(bandwidths=[1.0, -1.0]), "bandwidths"),
        (GMMN, dict(objective="kl"), "objective"),
        (GMMN, dict(num_samples=1), "num_samples"),
        (GMMN, dict(ais=dict(target_accept=1.5)), r"ais\.target_accept"),
        (GMMN, dict(generator=lambda i, o: ConvGenerator(i, o, image_shape=(1, 28, 28))), "image_shape"),
        (GAN, dict(discriminator=lambda i, o: ConvDiscriminator(i, o, image_shape=(1, 7, 7))), "image_shape"),
    ],
)
def test_bad_config_errors_name_the_key(cls, kwargs, key):
    # the model's own checks raise ConfigError; a network of nn/ raises ValueError (the CLI reports both in one line)
    with pytest.raises((ConfigError, ValueError), match=key):
        cls(data_shape=(64,), **kwargs)


def test_cli_rejects_an_unknown_generator_loss(run_cli, capsys):
    from tests.conftest import ROOT

    code = run_cli("fit", "--config", str(ROOT / "conf" / "gan.yaml"), "--model.init_args.generator_loss=wgan",
                   "--print_config")
    assert code != 0
    assert "generator_loss" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["gan", "gmmn"])
def test_validation_logs_the_sample_mmd_and_the_ais_nll_used_to_choose_sigma(family):
    torch.manual_seed(0)
    kw = dict(data_shape=(3,), latent_dim=2, hidden=(4,), obs_sigma=0.3, ais=HMCAnnealing(chains=2, steps=5),
              val_ais_examples=3)
    model = GAN(discriminator_hidden=(4,), **kw) if family == "gan" else GMMN(**kw)
    data = torch.rand(8, 3)
    loader = DataLoader(TensorDataset(data, torch.zeros(8)), batch_size=8)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    metrics = trainer.validate(model, loader, verbose=False)[0]
    expected = -model.log_prob(data[:3]).mean().item()  # deterministic given ais.seed
    assert metrics["val/nll_ais"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val/mmd2"] > 0
    if family == "gan":
        assert metrics["val/d_loss"] == pytest.approx(-metrics["val/value"], rel=1e-6)

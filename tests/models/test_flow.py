"""The ``Flow`` model against exact answers: linear flows, a hand-computed bits/dim, a density that
integrates to 1, the eight-Gaussians entropy, every shipped config, and a 2-process DDP run.

Budgets (2-core CPU): the default run of this file takes about a minute; the ``slow`` test trains
``conf/flow_toy.yaml`` as shipped (MAF, 8 layers, 10,000 steps, 2-3 minutes on one core).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from lightning_gm.callbacks.density import DensityPictures, density_grid
from lightning_gm.data.modules import GenerativeDataModule
from lightning_gm.data.toy import sample_toy, toy_entropy
from lightning_gm.models import Flow
from lightning_gm.models.flow import standard_normal_log_prob
from lightning_gm.nn.flows import (
    MAF,
    ElementwiseAffine,
    Glow,
    MultiScaleRealNVP,
    PlanarStack,
    RadialStack,
    RealNVP,
)

ROOT = Path(__file__).resolve().parents[2]
FLOW_CONFIGS = ["flow_toy", "maf_mnist", "realnvp_mnist", "glow_mnist"]


class _Tensors(GenerativeDataModule):
    """A DataModule serving fixed tensors in every split, with a chosen bits/dim offset."""

    def __init__(self, x: Tensor, offset: float | None = None) -> None:
        super().__init__(batch_size=len(x))
        self.x, self.offset = x, offset

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def bpd_offset(self) -> float | None:
        return self.offset

    def _load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        y = torch.zeros(len(self.x), dtype=torch.long)
        return {s: (self.x, y) for s in ("train", "val", "test")}


def _quiet_trainer(**kw: Any) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1, **kw)


# --- exact answers --------------------------------------------------------------------------------
def test_linear_flow_is_the_gaussian_it_defines():
    """z = (x - mu) / sigma: p(x) = N(mu, diag sigma^2); samples at temperature T have std T sigma."""
    torch.manual_seed(0)
    affine = ElementwiseAffine(3).double()
    mu, log_sigma = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, -0.7, 1.1])
    with torch.no_grad():
        affine.loc.copy_(mu), affine.log_scale.copy_(log_sigma)
    model = Flow(data_shape=(3,), flow=affine).double()
    x = torch.randn(50, 3, dtype=torch.float64) * 2
    exact = torch.distributions.Normal(mu.double(), log_sigma.double().exp()).log_prob(x).sum(-1)
    assert torch.allclose(model.log_prob(x), exact, atol=1e-12)
    assert model.estimator == "exact" and model.family == "flow"
    for t in (1.0, 0.5):
        s = model.sample(40000, temperature=t)
        assert torch.allclose(s.mean(0), mu.double(), atol=0.05)
        assert torch.allclose(s.std(0), t * log_sigma.double().exp(), rtol=0.03)
    assert torch.allclose(model.sample(3, temperature=0.0), mu.double().expand(3, -1))


def test_bits_per_dim_on_a_hand_computed_example():
    """The logit transform's log-det and the D ln 256 offset, by hand for two 2-pixel images.

    Flow: logit (alpha = 0.05), then z = (y - 1) * e^{-0.5}. With s = alpha + (1 - 2 alpha) x,
    log p(x) = log N(z) + 2 * (-0.5) + sum_i [log(1 - 2 alpha) - log s_i - log(1 - s_i)],
    bits/dim = (mean nll + 2 ln 256) / (2 ln 2).
    """
    alpha = 0.05
    affine = ElementwiseAffine(2)
    with torch.no_grad():
        affine.loc.fill_(1.0), affine.log_scale.fill_(0.5)
    model = Flow(data_shape=(2,), flow=affine, logit_alpha=alpha)
    images = [(0.5, 0.25), (0.9, 0.1)]

    def hand_log_p(px: tuple[float, float]) -> float:
        total = 0.0
        for v in px:
            s = alpha + (1 - 2 * alpha) * v
            y = math.log(s / (1 - s))
            z = (y - 1.0) * math.exp(-0.5)
            total += -0.5 * z * z - 0.5 * math.log(2 * math.pi) - 0.5 + math.log(1 - 2 * alpha) - math.log(s * (1 - s))
        return total

    nll = -sum(hand_log_p(p) for p in images) / 2
    bpd = (nll + 2 * math.log(256)) / (2 * math.log(2))
    dm = _Tensors(torch.tensor(images), offset=2 * math.log(256))
    out = _quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    assert out["test/nll"] == pytest.approx(nll, rel=1e-5)
    assert out["test/bpd"] == pytest.approx(bpd, rel=1e-5)
    # hand check of the hand check: image 1, pixel 1 (x = 0.5) sits at logit 0 with slope 4 / 0.9
    assert math.log(1 - 2 * alpha) - math.log(0.25) == pytest.approx(math.log(4 * 0.9))


ARCHITECTURES: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "realnvp": (partial(RealNVP, num_layers=4, hidden_features=16, actnorm=True), (2,)),
    "maf": (partial(MAF, num_layers=3, hidden_features=(16,)), (2,)),
    "maf-image": (partial(MAF, num_layers=2, hidden_features=(32,), permutation="random"), (1, 4, 4)),
    "planar": (partial(PlanarStack, num_layers=4), (2,)),
    "radial": (partial(RadialStack, num_layers=4), (2,)),
    "realnvp-multiscale": (partial(MultiScaleRealNVP, num_levels=2, hidden_channels=8), (1, 8, 8)),
    "glow": (partial(Glow, num_levels=2, depth=2, hidden_channels=8), (1, 8, 8)),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_samples_and_inverts(name: str):
    """Away from the identity initialisation: x = f^-1(z) maps back to z, and
    log p(x) = log N(z) - log|det dx/dz| (the change of variables read both ways)."""
    factory, shape = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = Flow(data_shape=shape, flow=factory).double()
    model.train()
    model.initialize_actnorm(torch.rand(64, *shape, dtype=torch.float64))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    z = 0.8 * torch.randn(5, *model.latent_shape, dtype=torch.float64)
    x, ladj_inv = model.flow.inverse(z)
    assert x.shape == (5, *shape)
    z2, _ = model(x)
    assert torch.allclose(z2, z, atol=1e-6)
    assert torch.allclose(model.log_prob(x), standard_normal_log_prob(z) - ladj_inv, atol=1e-6)
    assert model.sample(3).shape == (3, *shape)


@pytest.mark.parametrize("name", ["realnvp-odd", "maf-image"])
def test_architecture_logdet_matches_autograd_jacobian(name: str):
    """The builders' log-det (RealNVP's split conditioners on an odd D, MAF through a flatten) against
    ``slogdet`` of the autograd Jacobian, away from the identity initialisation."""
    factory, shape = {
        "realnvp-odd": (partial(RealNVP, num_layers=3, hidden_features=8), (5,)),
        "maf-image": ARCHITECTURES["maf-image"],
    }[name]
    torch.manual_seed(1)
    flow = factory(shape).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, *shape, dtype=torch.float64)
    _, ladj = flow(x)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, *shape))[0].flatten(), x[b].flatten())
        assert torch.allclose(ladj[b], torch.linalg.slogdet(jac).logabsdet, atol=1e-9)


def test_actnorm_initialises_from_the_first_training_batch():
    torch.manual_seed(0)
    model = Flow(data_shape=(2,), flow=partial(RealNVP, num_layers=2, actnorm=True))
    x = torch.randn(256, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([3.0, -1.0])
    first = model.actnorm_layers()[0]
    assert not bool(first.initialized)
    model.train()
    model.on_train_batch_start((x, torch.zeros(256)), 0)
    assert all(bool(m.initialized) for m in model.actnorm_layers())
    assert torch.allclose(first.loc, x.mean(0), atol=1e-5)
    z, _ = first(x)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    loc = first.loc.clone()
    model.on_train_batch_start((x + 5, torch.zeros(256)), 1)  # initialised once, never again
    assert torch.equal(first.loc, loc)


# --- learning the toys ------------------------------------------------------------------------------
def _train(model: Flow, x: Tensor, steps: int, lr: float = 3e-3, batch: int = 500, seed: int = 0) -> Flow:
    """Plain Adam with a cosine schedule on the exact NLL (ActNorm initialised from the first batch)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (batch,), generator=g)]
        model.initialize_actnorm(xb)
        loss = -model.log_prob(xb).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@pytest.mark.parametrize(
    "name, factory",
    [
        ("maf", partial(MAF, num_layers=5, hidden_features=(64, 64))),
        ("realnvp", partial(RealNVP, num_layers=6, hidden_features=64, actnorm=True)),
        ("planar", partial(PlanarStack, num_layers=16)),
    ],
)
def test_learned_density_integrates_to_one(name: str, factory: Callable[..., Any]):
    """After 300 steps on the 8-Gaussians, the density summed over a 600 x 600 grid on [-7, 7]^2 is 1 +- 1%."""
    torch.manual_seed(0)
    model = _train(Flow(data_shape=(2,), flow=factory), sample_toy("eight_gaussians", 20000, seed=0), 300)
    grid = density_grid(model.log_prob, (-7, 7, -7, 7), size=600)
    assert grid.mass == pytest.approx(1.0, abs=0.01), (name, grid.mass)


def test_eight_gaussians_nll_approaches_the_true_entropy_quickly():
    """Default-run budget: MAF (5 x MADE 64-64), 1,500 steps of 500 (~5-10 s on one core).

    The test NLL is a cross-entropy, so it can never fall below the true entropy (Gibbs): a wrong
    log-det would show up as an NLL under it. After this budget it is within 0.3 nats above it."""
    torch.manual_seed(0)
    model = Flow(data_shape=(2,), flow=partial(MAF, num_layers=5, hidden_features=(64, 64)))
    model = _train(model, sample_toy("eight_gaussians", 50000, seed=0), 1500)
    with torch.no_grad():
        lp = model.log_prob(sample_toy("eight_gaussians", 20000, seed=2))
    nll, se = -lp.mean().item(), lp.std().item() / math.sqrt(len(lp))
    entropy, entropy_se = toy_entropy("eight_gaussians")
    gap = nll - entropy
    assert gap > -3 * math.hypot(se, entropy_se), (nll, entropy)
    assert gap < 0.3, (nll, entropy)


# --- the command ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FLOW_CONFIGS)
def test_every_flow_config_parses_and_instantiates(name: str, tmp_path, monkeypatch):
    from lightning_gm.cli import GenerativeCLI

    monkeypatch.chdir(tmp_path)
    cli = GenerativeCLI(args=["--config", str(ROOT / "conf" / f"{name}.yaml"), "--trainer.logger=false"], run=False)
    assert isinstance(cli.model, Flow)
    assert cli.model.data_shape == tuple(cli.datamodule.shape)
    z_shape = cli.model.flow.forward_shape(cli.model.data_shape)
    assert math.prod(z_shape) == math.prod(cli.model.data_shape)
    x = torch.rand(2, *cli.model.data_shape) * 0.9 + 0.05
    assert torch.isfinite(cli.model.log_prob(x)).all()


def _summary(tmp_path: Path, experiment: str) -> tuple[Path, dict[str, Any]]:
    runs = list((tmp_path / "runs" / experiment).glob("*/summary.json"))
    assert len(runs) == 1, runs
    return runs[0].parent, json.loads(runs[0].read_text())


def test_fit_through_the_command_lowers_the_nll_and_draws_the_density(run_cli, tmp_path):
    args = ["--config", str(ROOT / "conf" / "flow_toy.yaml"), "--trainer.max_epochs=10",
            "--trainer.limit_train_batches=6", "--data.init_args.n_test=4000"]
    untrained = Flow(data_shape=(2,), flow=partial(MAF, num_layers=8, hidden_features=(64, 64)))
    with torch.no_grad():
        start = -untrained.log_prob(sample_toy("eight_gaussians", 4000, seed=2)).mean().item()
    assert run_cli("fit", *args) == 0
    run, summary = _summary(tmp_path, "flow_toy")
    nll = summary["test"]["test/nll"]
    assert summary["estimator"] == "exact" and summary["family"] == "flow"
    assert math.isfinite(nll) and nll < start - 1.0, (nll, start)
    assert (run / "samples" / "density_epoch=009.png").is_file()
    assert (run / "samples" / "samples_epoch=009.png").is_file()


def test_density_pictures_callback_reports_a_normalised_density(tmp_path):
    torch.manual_seed(0)
    dm = _Tensors(sample_toy("two_moons", 2000, seed=0))
    model = Flow(data_shape=(2,), flow=partial(RealNVP, num_layers=4, hidden_features=32))
    cb = DensityPictures(every_n_epochs=1, grid_size=300, bounds=[-6, 6, -6, 6])
    _quiet_trainer(max_epochs=1, callbacks=[cb], default_root_dir=str(tmp_path), num_sanity_val_steps=0).fit(model, dm)
    assert cb.last_path is not None and cb.last_path.is_file() and cb.last_path.parent.name == "samples"
    assert cb.last_grid is not None and cb.last_grid.mass == pytest.approx(1.0, abs=0.01)


@pytest.mark.multiprocess
def test_two_process_ddp_fit_matches_one_process_test(run_cli, tmp_path):
    """``fit`` on 2 CPU processes (DDP, gloo) with ActNorm, then ``test`` of its best checkpoint on 1
    process: the exact test NLL over the same 2,000 points is the same number."""
    config = str(ROOT / "conf" / "flow_toy.yaml")
    common = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.check_val_every_n_epoch=1",
              "--trainer.logger=false", "--trainer.callbacks=[]", "--data.init_args.n_train=4000",
              "--data.init_args.n_val=1000", "--data.init_args.n_test=2000", "--data.init_args.eval_batch_size=500",
              "--model.init_args.flow.init_args.actnorm=true"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_gm", "fit", "--config", config, "--run_name=ddp", "--trainer.strategy=ddp",
         "--trainer.devices=2", "--trainer.accelerator=cpu", *common],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run, summary = _summary(tmp_path, "flow_toy")
    ddp_nll = summary["test"]["test/nll"]
    assert math.isfinite(ddp_nll) and summary["status"] == "tested"
    ckpt = summary["best_checkpoint"]
    assert ckpt and Path(tmp_path / ckpt if not os.path.isabs(ckpt) else ckpt).is_file()
    state = torch.load(tmp_path / ckpt if not os.path.isabs(ckpt) else ckpt, map_location="cpu", weights_only=False)
    assert all(bool(v) for k, v in state["state_dict"].items() if k.endswith("initialized"))
    assert run_cli("test", "--config", config, "--run_name=ddp", "--ckpt_path", str(ckpt), "--trainer.devices=1",
                   "--trainer.strategy=auto", "--trainer.accelerator=cpu", *common) == 0
    _, again = _summary(tmp_path, "flow_toy")
    assert again["test"]["test/nll"] == pytest.approx(ddp_nll, rel=1e-5, abs=1e-5)


# --- the stated budget --------------------------------------------------------------------------------
@pytest.mark.slow
def test_eight_gaussians_within_005_nats_of_the_entropy_with_the_shipped_config(run_cli, tmp_path):
    """``lightning_gm fit --config conf/flow_toy.yaml`` as shipped (MAF, 8 layers, 100 epochs of 100
    steps, Adam 3e-3 with cosine decay): test NLL within 0.05 nats of the true entropy (2.832 nats)."""
    assert run_cli("fit", "--config", str(ROOT / "conf" / "flow_toy.yaml"), "--trainer.logger=false") == 0
    _, summary = _summary(tmp_path, "flow_toy")
    entropy, _ = toy_entropy("eight_gaussians")
    nll = summary["test"]["test/nll"]
    assert -0.02 < nll - entropy < 0.05, (nll, entropy)


def test_per_step_scheduler_interval_warms_the_learning_rate_up_every_update():
    """``lr_scheduler_interval="step"`` (Glow's warm-up): the scheduler steps after every update, not every epoch."""
    from torch.utils.data import DataLoader, TensorDataset

    lrs: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    torch.manual_seed(0)
    model = Flow(data_shape=(2,), flow=partial(RealNVP, num_layers=2, hidden_features=8),
                 optimizer=lambda p: torch.optim.Adamax(p, lr=1e-3),
                 lr_scheduler=lambda opt: torch.optim.lr_scheduler.LinearLR(opt, 0.25, 1.0, total_iters=3),
                 lr_scheduler_interval="step")
    loader = DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=8)
    _quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[Record()]).fit(model, loader)
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])

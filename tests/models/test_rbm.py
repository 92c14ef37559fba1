"""The RBM LightningModules: the CD/penalty gradient through the model, data initialisation, PCD chains in
checkpoints and exact resume, the Gaussian RBM's density in data space, and a 2-process DDP fit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch

from lightning_gm.data import DigitsDataModule
from lightning_gm.estimators.partition import enumerate_binary, log_partition_enumerate
from lightning_gm.estimators.ais import AISSchedule
from lightning_gm.models import RBM, GaussianRBM
from lightning_gm.nn.rbm import CD, Penalties
from tests.conftest import ROOT


def _trainer(tmp_path, epochs: int, **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


@pytest.mark.parametrize("weight_cost,sparsity_cost", [(0.0, 0.0), (0.01, 0.0), (0.0, 0.5), (0.003, 0.2)])
def test_training_loss_gradient_is_hinton_update(weight_cost: float, sparsity_cost: float) -> None:
    """-grad = <v p(h|v)>_data - <v p(h|v)>_model - lambda_W W - lambda_s (q - p) <v>, and on c the same without v."""
    torch.manual_seed(0)
    m = RBM(data_shape=(7,), n_hidden=5, cd=CD(persistent=False, k=1), weight_std=0.5,
            penalties=Penalties(weight_cost=weight_cost, sparsity_cost=sparsity_cost, sparsity_target=0.05,
                                sparsity_decay=0.9))
    v = torch.bernoulli(torch.full((13, 7), 0.4))
    state = torch.random.get_rng_state()
    m._generator = torch.Generator().manual_seed(3)
    q_old = m.running_q.clone()
    loss = m.loss_terms(v, "train")["loss"]
    loss.backward()
    v_model = m.rbm.gibbs_vhv(v, 1, torch.Generator().manual_seed(3)).v  # the same negative samples
    with torch.no_grad():
        ph_d, ph_m = m.rbm.mean_hiddens(v), m.rbm.mean_hiddens(v_model)
        q = 0.9 * q_old + 0.1 * ph_d.mean(0) if sparsity_cost > 0 else q_old  # tracked only when used
        torch.testing.assert_close(m.running_q, q)
        pos_w, neg_w = v.T @ ph_d / 13, v_model.T @ ph_m / 13
        sp = sparsity_cost * (q - 0.05)
        want_w = -(pos_w - neg_w) + weight_cost * m.rbm.W + v.mean(0)[:, None] * sp[None, :]
        want_c = -(ph_d.mean(0) - ph_m.mean(0)) + sp
        want_b = -(v.mean(0) - v_model.mean(0))
    torch.testing.assert_close(m.rbm.W.grad, want_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m.rbm.c.grad, want_c, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m.rbm.b.grad, want_b, atol=1e-6, rtol=1e-5)
    torch.random.set_rng_state(state)


def test_fit_start_sets_visible_biases_to_data_log_odds(tmp_path) -> None:
    dm = DigitsDataModule(binarize="static", batch_size=100)
    m = RBM(data_shape=dm.shape, n_hidden=8, sample_steps=5)
    _trainer(tmp_path, 1, limit_train_batches=0, limit_val_batches=0).fit(m, dm)
    p = dm.splits["train"][0].mean(0).double().clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(m.rbm.b.detach().double(), torch.log(p / (1 - p)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.ais_base.double(), torch.log(p / (1 - p)), atol=1e-5, rtol=1e-5)
    assert m._train_subset is not None and m._train_subset.shape == (1000, 64)


def _cli(*args: str) -> int:
    from lightning_gm.cli import main

    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


_DIGITS_RBM = [
    "--model=lightning_gm.models.RBM", "--model.init_args.n_hidden=12", "--model.init_args.cd.chains=20",
    "--model.init_args.sample_steps=10", "--model.init_args.ais.exact_max_units=12", "--data=lightning_gm.data.DigitsDataModule",
    "--data.init_args.binarize=static", "--data.init_args.batch_size=100", "--trainer.logger=false",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--test_after_fit=false",
    "--experiment=rbm",
]


def test_pcd_chains_survive_a_checkpoint_and_resume_exactly(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _cli("fit", *_DIGITS_RBM, "--trainer.max_epochs=3", "--run_name=straight") == 0
    assert _cli("fit", *_DIGITS_RBM, "--trainer.max_epochs=1", "--run_name=cut") == 0
    cut = tmp_path / "runs/rbm/cut/checkpoints/last.ckpt"
    ck = torch.load(cut, weights_only=True)
    chains = ck["state_dict"]["chains"]
    assert chains.shape == (20, 64) and set(chains.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(ck["pcd_chains_per_rank"][0], chains, rtol=0, atol=0)
    loaded = RBM.load_from_checkpoint(cut)
    torch.testing.assert_close(loaded.chains, chains, rtol=0, atol=0)
    assert bool(loaded.chains_ready)
    assert torch.equal(loaded.generator.get_state(), ck["chain_rng_per_rank"][0].to(torch.uint8))
    # resuming continues the same chains with the same random stream: identical to the uninterrupted run
    assert _cli("fit", *_DIGITS_RBM, "--trainer.max_epochs=3", "--run_name=cut", f"--ckpt_path={cut}") == 0
    a = torch.load(tmp_path / "runs/rbm/straight/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(cut, weights_only=True)
    for key in ("chains", "rbm.W", "rbm.b", "rbm.c"):
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=1e-6)


def test_gaussian_rbm_density_in_data_space_integrates_to_one(tmp_path) -> None:
    """Standardisation inside the model: exp(log_prob) over a grid of the *data* space sums to 1."""
    torch.manual_seed(1)
    m = GaussianRBM(data_shape=(2,), n_hidden=3, weight_std=0.8, ais=AISSchedule(exact_max_units=10)).double()
    with torch.no_grad():
        m.data_mean.copy_(torch.tensor([3.0, -1.0]))
        m.data_std.copy_(torch.tensor([0.5, 2.0]))
        m.rbm.b.copy_(torch.tensor([0.3, -0.2]))
        m.rbm.c.normal_()
    assert m.estimator == "exact"
    g0 = torch.linspace(3.0 - 6 * 0.5 * 2, 3.0 + 6 * 0.5 * 2, 301, dtype=torch.float64)
    g1 = torch.linspace(-1.0 - 6 * 2.0 * 2, -1.0 + 6 * 2.0 * 2, 301, dtype=torch.float64)
    x = torch.cartesian_prod(g0, g1)
    cell = (g0[1] - g0[0]) * (g1[1] - g1[0])
    total = float(torch.exp(m.log_prob(x)).sum() * cell)
    assert total == pytest.approx(1.0, abs=2e-3)


def test_bernoulli_log_prob_normalises_over_all_binary_vectors() -> None:
    torch.manual_seed(2)
    m = RBM(data_shape=(6,), n_hidden=4, weight_std=1.0)
    x = enumerate_binary(6, torch.float32)
    assert float(torch.logsumexp(m.log_prob(x).double(), 0)) == pytest.approx(0.0, abs=1e-5)
    assert m.log_z.log_z == pytest.approx(log_partition_enumerate(m.rbm), abs=1e-9)


def test_bad_config_values_name_the_key() -> None:
    from lightning_gm.errors import ConfigError

    with pytest.raises(ValueError, match=r"^model\.init_args\.cd\.k must be >= 1, got 0$"):
        CD(k=0)
    with pytest.raises(ValueError, match=r"^model\.init_args\.penalties\.sparsity_target must be in \[0, 1\), got 1\.5$"):
        Penalties(sparsity_target=1.5)
    with pytest.raises(ConfigError, match="model.init_args.n_hidden"):
        RBM(n_hidden=0)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'n_hiden'"):
        RBM(n_hiden=3)


def _env() -> dict:
    return dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.mark.multiprocess
def test_ddp_two_processes_keep_their_own_chains(tmp_path) -> None:
    args = [sys.executable, "-m", "lightning_gm", "fit", *_DIGITS_RBM, "--run_name=ddp", "--trainer.max_epochs=2",
            "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--test_after_fit=true",
            "--model.init_args.ais.exact_max_units=0", "--model.init_args.ais.runs=10", "--model.init_args.ais.steps=100"]
    out = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs/rbm/ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "tested" and summary["estimator"] == "ais 10x100"
    assert summary["global_step"] == 2 * 6  # 1197 examples over 2 processes, 100 per batch
    assert math.isfinite(summary["test"]["test/nll"]) and math.isfinite(summary["test"]["test/logZ"])
    ck = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    per_rank = ck["pcd_chains_per_rank"]
    assert per_rank.shape == (2, 20, 64)
    assert not torch.equal(per_rank[0], per_rank[1])  # independent streams, not one chain set twice
    torch.testing.assert_close(per_rank[0], ck["state_dict"]["chains"], rtol=0, atol=0)
    assert not torch.equal(ck["chain_rng_per_rank"][0], ck["chain_rng_per_rank"][1])

"""The DBM LightningModule: phases follow the epoch, the composed DBM has the prescribed parameters, the
test bound is a lower bound of the exact log-likelihood, and a run resumed from ``last.ckpt`` continues
in its phase."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lightning_gm.errors import ConfigError
from lightning_gm.estimators.dbm import dbm_log_partition_enumerate
from lightning_gm.models import DBM


def test_phase_follows_the_epoch() -> None:
    m = DBM(data_shape=(4,), hidden=[3, 3, 2], epochs_per_layer=[2, 0, 3])
    assert [m.phase_at(e) for e in range(8)] == [0, 0, 2, 2, 2, 3, 3, 3]
    assert m.joint_start == 5
    assert DBM(data_shape=(4,), hidden=[3], epochs_per_layer=[0], centered=True).phase_at(0) == 1


@pytest.mark.parametrize("hidden", [[5, 4], [5, 4, 3], [5, 4, 3, 2]])
def test_composition_has_the_prescribed_energy(hidden) -> None:
    torch.manual_seed(0)
    m = DBM(data_shape=(6,), hidden=hidden, epochs_per_layer=[1] * len(hidden))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    m.compose()
    L = len(hidden)
    R, beta, gamma = list(m.pre_W), list(m.pre_b), list(m.pre_c)
    states = [torch.bernoulli(torch.full((7, s), 0.5)) for s in m.sizes]
    # E = -beta_1'v - gamma_L'h_L - sum_{0<l<L} (gamma_l + beta_{l+1})/2 ' h_l
    #     - v'R_1 h_1 - h_{L-1}'R_L h_L - sum_{1<l<L} h_{l-1}'(R_l / 2) h_l
    expected = -states[0] @ beta[0] - states[L] @ gamma[L - 1]
    for l in range(1, L):
        expected = expected - states[l] @ (0.5 * (gamma[l - 1] + beta[l]))
    for l in range(1, L + 1):
        scale = 1.0 if l in (1, L) else 0.5
        expected = expected - ((states[l - 1] @ (scale * R[l - 1])) * states[l]).sum(-1)
    torch.testing.assert_close(m.dbm.energy(states), expected, rtol=1e-5, atol=1e-4)
    assert bool(m.composed)


def test_pretraining_rbms_double_the_right_inputs() -> None:
    m = DBM(data_shape=(4,), hidden=[3, 3, 2], epochs_per_layer=[1, 1, 1])
    assert [m._up_factors(l) for l in (1, 2, 3)] == [(2.0, 1.0), (1.0, 1.0), (1.0, 2.0)]
    assert DBM(data_shape=(4,), hidden=[3], epochs_per_layer=[1])._up_factors(1) == (1.0, 1.0)


def test_test_bound_is_below_the_exact_log_likelihood() -> None:
    torch.manual_seed(1)
    m = DBM(data_shape=(5,), hidden=[4, 3], epochs_per_layer=[0, 0], weight_std=1.0, mf_iterations=50).double()
    v = torch.bernoulli(torch.full((16, 5), 0.5, dtype=torch.float64))
    assert m.estimator == "exact+meanfield"
    bound = m.log_prob(v)
    # exact log p(v): enumerate h1 (the odd layer), sum out v... here, per example: sum over h1, h2 of e^{-E}
    from tests.nn.test_dbm import brute_log_p

    exact = brute_log_p(m.dbm, v)
    assert torch.all(bound <= exact + 1e-9) and float((exact - bound).mean()) < 2.0
    m.ais = m.ais.replace(exact_max_units=0)
    assert m.estimator == "ais+meanfield"


@pytest.mark.parametrize(
    "kwargs, key",
    [({"hidden": [3, 2], "epochs_per_layer": [1]}, "epochs_per_layer"),
     ({"hidden": [3, 2], "epochs_per_layer": [1, 1], "centered": True}, "centered"),
     ({"hidden": [3], "epochs_per_layer": [1], "gibbs_steps": 0}, "gibbs_steps"),
     ({"hidden": [3], "epochs_per_layer": [1], "max_norm": -1.0}, "max_norm"),
     ({"hidden": [3], "epochs_per_layer": [1], "joint_lr_scale": 0.0}, "joint_lr_scale")],
)
def test_bad_configs_name_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        DBM(data_shape=(4,), **kwargs)


def _phases(run) -> dict[int, float]:
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("train/phase_epoch")]
    return {int(r["epoch"]): float(r["train/phase_epoch"]) for r in rows}


COMMON = ["--model=lightning_gm.models.DBM", "--model.init_args.hidden=[16, 8]", "--model.init_args.epochs_per_layer=[1, 1]",
          "--model.init_args.num_chains=20", "--model.init_args.sample_steps=5", "--model.init_args.mf_iterations=5",
          "--data=lightning_gm.data.DigitsDataModule", "--data.init_args.binarize=static", "--data.init_args.batch_size=100",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--experiment=dbm", "--run_name=r",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir=runs"]


def test_resume_continues_in_the_joint_phase(run_cli, tmp_path) -> None:
    assert run_cli("fit", *COMMON, "--trainer.max_epochs=3", "--test_after_fit=false",
                   "--trainer.callbacks+=lightning_gm.callbacks.SamplePictures") == 0
    run = tmp_path / "runs/dbm/r"
    pictures = {p.name for p in (run / "samples").glob("*.png")}
    assert {"samples_epoch=002.png", "reconstructions_epoch=002.png"} <= pictures
    assert _phases(run) == {0: 0.0, 1: 1.0, 2: 2.0}
    before = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert bool(before["composed"]) and bool(before["chains_ready"])
    assert run_cli("fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs=4", "--ckpt_path=last",
                   "--model.init_args.ais.exact_max_units=0", "--model.init_args.ais.runs=50",
                   "--model.init_args.ais.steps=300", "--model.init_args.lr_decay=1.0", "--test_after_fit=true") == 0
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    after = ckpt["state_dict"]
    # joint lr = 0.05 (default SGD) x joint_lr_scale 0.02 / (1 + lr_decay x 1 joint epoch done)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.02 / 2)
    assert _phases(run)[3] == 2.0  # still joint training after the resume
    for key in ("pre_W.0", "pre_W.1", "pre_c.1"):  # no pretraining, no re-composition after the resume
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert not torch.equal(after["dbm.weights.0"], before["dbm.weights.0"])  # joint training went on
    assert not torch.equal(after["dbm.weights.0"], before["pre_W.0"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "ais+meanfield 50x300" and summary["family"] == "dbm" and summary["status"] == "tested"
    nll, log_z = summary["test"]["test/nll"], summary["test"]["test/logZ"]
    assert 10 < nll < 45  # nats on 8x8 binary digits (64 bits at most)
    m = DBM(data_shape=(64,), hidden=[16, 8], epochs_per_layer=[1, 1], num_chains=20)
    m.load_state_dict(after)
    exact = dbm_log_partition_enumerate(m.dbm)
    assert abs(log_z - exact) < 0.5  # the model's AIS against enumeration (2^16)


@pytest.mark.parametrize("chains_ready", [False, True])
def test_samples_and_reconstructions_are_pictures(chains_ready) -> None:
    torch.manual_seed(0)
    m = DBM(data_shape=(2, 3), hidden=[4, 3], epochs_per_layer=[0, 0], num_chains=5, sample_steps=3)
    if chains_ready:
        m._init_chains()
    for n in (4, 7):  # 7 > num_chains: fresh chains
        s = m.sample(n)
        assert s.shape == (n, 2, 3) and torch.all((s >= 0) & (s <= 1))
    x = torch.bernoulli(torch.full((3, 2, 3), 0.5))
    r = m.reconstruct(x)
    assert r.shape == (3, 2, 3) and torch.all((r >= 0) & (r <= 1))


def test_max_norm_caps_every_hidden_units_incoming_weights() -> None:
    torch.manual_seed(0)
    m = DBM(data_shape=(6,), hidden=[5, 4], epochs_per_layer=[1, 1], weight_std=3.0, max_norm=1.5)
    m.on_train_batch_end(None, None, 0)
    for W in [*m.dbm.weights, *m.pre_W]:
        assert float(W.norm(dim=0).max()) <= 1.5 + 1e-5


def test_centred_training_step_moves_offsets_without_changing_the_distribution() -> None:
    torch.manual_seed(0)
    m = DBM(data_shape=(5,), hidden=[4, 3], epochs_per_layer=[0, 0], centered=True, offset_rate=0.5,
            num_chains=10, weight_std=0.5).double()
    with torch.no_grad():
        for l in range(3):
            m.dbm.set_offset(l, torch.full((m.sizes[l],), 0.5))
    m._init_chains()
    x = torch.bernoulli(torch.full((8, 5), 0.3, dtype=torch.float64))
    terms = m.loss_terms(x, "train")
    terms["loss"].backward()
    assert all(p.grad is not None for p in m.dbm.parameters())
    from tests.nn.test_dbm import all_states

    states = all_states(m.sizes)
    before = -m.dbm.energy(states).detach()
    offsets = [m.dbm.offset(l).clone() for l in range(3)]
    m.on_train_batch_end(None, None, 0)
    after = -m.dbm.energy(states).detach()
    assert not torch.equal(m.dbm.offset(1), offsets[1])  # hidden offsets follow the data-side means
    torch.testing.assert_close(m.dbm.offset(0), offsets[0])  # the visible offset stays
    diff = after - before
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), rtol=0, atol=1e-9)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ddp_two_processes_fit_through_the_phases(tmp_path) -> None:
    """2-process DDP on CPU: pretraining, composition and joint training in one run, then the test."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "lightning_gm", "fit", *COMMON, "--trainer.max_epochs=3",
            "--trainer.strategy=ddp_find_unused_parameters_true", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs/dbm/r"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "tested" and summary["epochs"] == 3 and summary["estimator"] == "exact+meanfield"
    assert summary["global_step"] == 3 * 6  # 1197 training examples over 2 processes, 100 per batch
    assert 10 < summary["test"]["test/nll"] < 45
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert bool(state["composed"])

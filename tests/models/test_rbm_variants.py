"""The SubspaceRBM and SpikeSlabRBM LightningModules: normalised densities (exact log Z), the CD gradient,
configuration errors naming the key, and a short fit + AIS test on the digits."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from lightning_gm.data import DigitsDataModule
from lightning_gm.errors import ConfigError
from lightning_gm.estimators.ais import AISSchedule
from lightning_gm.estimators.partition import enumerate_binary
from lightning_gm.models import SpikeSlabRBM, SubspaceRBM
from lightning_gm.nn.rbm import CD, Penalties


def test_subspace_rbm_log_prob_normalises_and_ais_agrees() -> None:
    torch.manual_seed(0)
    m = SubspaceRBM(data_shape=(7,), n_hidden=3, subspace_size=2, weight_std=1.0,
                    ais=AISSchedule(exact_max_units=10, runs=200, steps=500)).double()
    with torch.no_grad():
        m.rbm.c.normal_()
        m.rbm.A.normal_()
    assert m.estimator == "exact"
    assert float(torch.logsumexp(m.log_prob(enumerate_binary(7)), 0)) == pytest.approx(0.0, abs=1e-9)
    ais = m.compute_log_partition(force_ais=True)
    assert ais.estimator == "ais" and ais.log_z == pytest.approx(m.log_z.log_z, abs=0.1)


def test_subspace_rbm_cd_gradient_is_the_expected_statistics() -> None:
    """-dL/dW_ijk = <x_i p(h_j|x) sigma(a_jk)>_data - <same>_model (CD-1 negatives from the same stream)."""
    torch.manual_seed(1)
    m = SubspaceRBM(data_shape=(6,), n_hidden=3, subspace_size=2, cd=CD(persistent=False), weight_std=0.5,
                    penalties=Penalties(weight_cost=0.0))
    x = torch.bernoulli(torch.full((11, 6), 0.4))
    m._generator = torch.Generator().manual_seed(3)
    m.loss_terms(x, "train")["loss"].backward()
    neg = m.rbm.gibbs_vhv(x, 1, torch.Generator().manual_seed(3)).v
    with torch.no_grad():
        def stats(v: torch.Tensor) -> torch.Tensor:
            return torch.einsum("ni,njk->ijk", v, m.rbm.mean_z(v)) / v.shape[0]

        want = -(stats(x) - stats(neg))
    torch.testing.assert_close(m.rbm.W.grad, want, rtol=1e-5, atol=1e-6)


def test_spike_slab_rbm_density_in_data_space_integrates_to_one() -> None:
    torch.manual_seed(2)
    m = SpikeSlabRBM(data_shape=(2,), n_hidden=3, weight_std=1.0, ais=AISSchedule(exact_max_units=10)).double()
    with torch.no_grad():
        m.data_mean.copy_(torch.tensor([0.5, -1.0]))
        m.data_std.copy_(torch.tensor([0.25, 2.0]))
        m.rbm.mu.normal_()
        m.rbm.b.normal_()
    assert m.estimator == "exact"
    g0 = torch.linspace(0.5 - 3.0, 0.5 + 3.0, 601, dtype=torch.float64)
    g1 = torch.linspace(-1.0 - 24.0, -1.0 + 24.0, 601, dtype=torch.float64)
    cell = (g0[1] - g0[0]) * (g1[1] - g1[0])
    total = float(torch.exp(m.log_prob(torch.cartesian_prod(g0, g1))).sum() * cell)
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("cls,key,value", [
    (SpikeSlabRBM, "visible_precision", 0.0),
    (SpikeSlabRBM, "visible_precision", -2.0),
    (SpikeSlabRBM, "slab_precision", 0.0),
    (SpikeSlabRBM, "min_precision", 0.0),
    (SpikeSlabRBM, "phi", -0.1),
    (SpikeSlabRBM, "min_std", 0.0),
    (SubspaceRBM, "subspace_size", 0),
    (SubspaceRBM, "n_hidden", 0),
])
def test_bad_values_raise_config_error_naming_the_key(cls: type, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"model.init_args.{key}"):
        cls(data_shape=(4,), **{key: value})


@pytest.mark.parametrize("cls,kwargs,dm_kwargs", [
    (SubspaceRBM, {"n_hidden": 6, "subspace_size": 2}, {"binarize": "static"}),
    (SpikeSlabRBM, {"n_hidden": 8}, {"dequantize": True}),
])
def test_short_fit_and_ais_test_on_digits(tmp_path, cls: type, kwargs: dict, dm_kwargs: dict) -> None:
    pl.seed_everything(0)
    dm = DigitsDataModule(batch_size=100, val_size=200, **dm_kwargs)
    m = cls(data_shape=dm.shape, cd=CD(chains=20), sample_steps=5, ais=AISSchedule(exact_max_units=0, runs=16, steps=60),
            **kwargs)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=1, limit_test_batches=1,
                         accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(m, dm)
    out = trainer.test(m, dm, verbose=False)[0]
    assert m.estimator == "ais 16x60" and m.log_z.runs == 16 and m.log_z.steps == 60
    assert out["test/ais_runs"] == 16 and out["test/ais_steps"] == 60 and 1 <= out["test/ais_ess"] <= 16
    assert math.isfinite(out["test/nll"]) and math.isfinite(out["test/logZ"])
    assert bool(m.chains_ready) and torch.isfinite(m.chains).all()
    pics = m.pictures(8)
    n_filters = kwargs["n_hidden"] * kwargs.get("subspace_size", 1)
    assert pics["filters"].shape == (n_filters, 64) and pics["fantasy"].shape == (8, 64)
    if cls is SubspaceRBM:  # gate-major: row j*K + k is the filter W[:, j, k]
        w = m.rbm.W.detach()[:, 1, 0]
        torch.testing.assert_close(pics["filters"][2], ((w - w.min()) / (w.max() - w.min())).float())

"""ConvRBM / ConvDBN LightningModules: the sparsity gradient, the test NLL against enumeration on a tiny model,
greedy layer-wise phases of the convolutional DBN, pictures, config errors, and an end-to-end CLI fit."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gm.estimators.ais import AISSchedule
from lightning_gm.nn.rbm import CD, Penalties
from lightning_gm.data import DigitsDataModule
from lightning_gm.errors import ConfigError
from lightning_gm.estimators.conv_rbm import conv_rbm_log_partition_enumerate
from lightning_gm.models import ConvDBN, ConvRBM


def _trainer(tmp_path, epochs: int, **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path), **kw)


@pytest.mark.parametrize("sparsity_cost", [0.0, 0.5, 2.0])
def test_sparsity_gradient_is_bias_only(sparsity_cost: float) -> None:
    """The regulariser adds exactly lambda_s (q_k - p) to the gradient of b_k and nothing to W or c."""
    torch.manual_seed(0)
    m = ConvRBM(data_shape=(1, 6, 6), n_filters=3, filter_size=3, pool_size=2, weight_std=0.5,
                penalties=Penalties(weight_cost=0.0, sparsity_target=0.1, sparsity_cost=sparsity_cost))
    x = torch.bernoulli(torch.full((8, 1, 6, 6), 0.4))
    grads = []
    for cost in (0.0, sparsity_cost):
        m.penalties = m.penalties.replace(sparsity_cost=cost)
        m._generator = torch.Generator().manual_seed(1)  # the same negative samples
        m.zero_grad()
        m.loss_terms(x, "train")["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    q = m.rbm.mean_hiddens(x)[0].mean((0, 2, 3)).detach()
    assert torch.allclose(grads[1]["rbm.b"] - grads[0]["rbm.b"], sparsity_cost * (q - 0.1), atol=1e-6)
    for name in ("rbm.W", "rbm.c"):
        assert torch.allclose(grads[1][name], grads[0][name])


def test_test_nll_is_exact_on_a_tiny_model(tmp_path) -> None:
    """4x4 images: log Z by enumeration, test/nll = mean F(v) + log Z = -mean log p(v), with log p summing to 1."""
    torch.manual_seed(0)
    m = ConvRBM(data_shape=(16,), n_filters=2, filter_size=2, pool_size=2, weight_std=1.0)
    assert m.estimator == "exact"
    x = torch.bernoulli(torch.full((40, 16), 0.3))
    out = _trainer(tmp_path, 1).test(m, DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=16), verbose=False)[0]
    log_z = conv_rbm_log_partition_enumerate(m.rbm)
    expected = float((m.rbm.free_energy(x.reshape(-1, 1, 4, 4)).double() + log_z).mean())
    assert out["test/nll"] == pytest.approx(expected, rel=1e-5)
    assert out["test/logZ"] == pytest.approx(log_z, rel=1e-6)
    from lightning_gm.estimators.partition import enumerate_binary
    assert float(torch.logsumexp(m.log_prob(enumerate_binary(16).float()).double(), 0)) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("persistent", [False, True])
def test_conv_rbm_fits_digits_and_draws_pictures(tmp_path, persistent: bool) -> None:
    """Two epochs on sklearn digits (8x8, binarised): the reconstruction error falls below that of the initial
    model, the sparsity regulariser pulls the detector activity towards the target, the pictures have the shapes."""
    dm = DigitsDataModule(binarize="threshold", flatten=False, batch_size=50)
    m = ConvRBM(data_shape=(1, 8, 8), n_filters=6, filter_size=3, pool_size=2, cd=CD(persistent=persistent, chains=50),
                penalties=Penalties(weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=5.0), sample_steps=5, ais=AISSchedule(runs=10, steps=50),
                optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5))
    trainer = _trainer(tmp_path, 3)
    dm.setup("fit")
    x = dm.splits["val"][0][:200]
    before = float(m.rbm.reconstruction_error(x))
    trainer.fit(m, dm)
    after = trainer.callback_metrics
    assert float(after["val/recon_error"]) < before
    q = float(m.rbm.mean_hiddens(x)[0].mean())  # 0.2 at the start (I = 0: 1 of 5 block states per detector)
    assert q < 0.15, q  # pulled towards the 0.05 target (the exact gradient is tested above)
    pics = m.pictures()
    assert pics["filters"].shape == (6, 9) and pics["pooled"].shape == (6, 9)
    assert m.sample(4).shape == (4, 1, 8, 8)
    res = trainer.test(m, dm, verbose=False)[0]
    assert m.estimator == "ais 10x50" and res["test/nll"] > 0 and res["test/ais_ess"] >= 1


class _Snapshots(pl.Callback):
    """Parameters of every layer at the start and at the end of each training epoch."""

    def __init__(self) -> None:
        self.start: list[list[list[torch.Tensor]]] = []
        self.end: list[list[list[torch.Tensor]]] = []

    @staticmethod
    def _snap(m: ConvDBN) -> list[list[torch.Tensor]]:
        return [[p.detach().clone() for p in layer.parameters()] for layer in m.layers]

    def on_train_epoch_start(self, trainer, m) -> None:
        self.start.append(self._snap(m))

    def on_train_epoch_end(self, trainer, m) -> None:
        self.end.append(self._snap(m))


def test_conv_dbn_trains_layers_greedily(tmp_path) -> None:
    """Epoch 0 changes only layer 0, epoch 1 only layer 1, whose input is layer 0's pooling probabilities."""
    dm = DigitsDataModule(binarize="threshold", flatten=False, batch_size=100)
    m = ConvDBN(data_shape=(1, 8, 8), n_filters=(4, 3), filter_size=(3, 2), pool_size=(2, 2), epochs_per_layer=(1, 1),
                sample_steps=3, down_steps=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.05))
    assert m.layers[1].in_channels == 4 and m.layers[1].image_size == (3, 3)
    snaps = _Snapshots()
    trainer = _trainer(tmp_path, 2, callbacks=[snaps])
    trainer.fit(m, dm)
    assert float(trainer.callback_metrics["val/stack_progress"]) == 2.0  # the checkpoint monitor: latest epoch
    for epoch in range(2):
        changed = [any(not torch.equal(a, b) for a, b in zip(snaps.start[epoch][l], snaps.end[epoch][l]))
                   for l in range(2)]
        assert changed == [epoch == 0, epoch == 1]
    x = dm.splits["val"][0][:5]
    assert torch.allclose(m.up(x, 1), m.layers[0].pool_probs(x.reshape(5, 1, 8, 8)))
    res = trainer.test(m, dm, verbose=False)[0]
    assert "test/nll" not in res and {"test/free_energy_0", "test/recon_error_1"} <= set(res)
    pics = m.pictures()
    assert pics["filters_layer1"].shape == (3, (2 * 2 + 3 - 1) ** 2)
    assert m.sample(3).shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    "cls,kw,match",
    [
        (ConvRBM, dict(data_shape=(10,)), "data_shape"),
        (ConvRBM, dict(data_shape=(1, 8, 8), filter_size=9), "filter_size"),
        (ConvRBM, dict(data_shape=(1, 8, 8), filter_size=3, pool_size=0), "pool_size"),
        (ConvDBN, dict(data_shape=(1, 8, 8), n_filters=(4, 4), filter_size=(3,), pool_size=(2, 2)), "per layer"),
        (ConvDBN, dict(data_shape=(1, 8, 8), n_filters=(4, 4), filter_size=(3, 5), pool_size=(2, 2)), r"filter_size\[1\]"),
    ],
)
def test_bad_configs_are_clear_errors(cls, kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(**kw)


def test_cli_fit_and_test_on_digits(run_cli, tmp_path) -> None:
    """conf/conv_rbm.yaml with the digits data: fit, filters as PNG, test NLL by AIS in summary.json."""
    from tests.conftest import ROOT

    args = ["fit", "--config", str(ROOT / "conf" / "conv_rbm.yaml"), "--data=lightning_gm.data.DigitsDataModule",
            "--data.binarize=threshold", "--data.flatten=false", "--data.val_size=300", "--data.eval_batch_size=300",
            "--model.init_args.filter_size=4",
            "--model.init_args.n_filters=4", "--model.init_args.ais.runs=5", "--model.init_args.ais.steps=20",
            "--model.init_args.sample_steps=2", "--trainer.max_epochs=1", "--trainer.logger=false",
            "--run_name=t"]
    assert run_cli(*args) == 0
    run = tmp_path / "runs" / "conv_rbm" / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "ais 5x20" and summary["test"]["test/nll"] > 0
    assert list((run / "samples").glob("filters_*.png"))  # 4x4 filters; 3x3 pooled maps are too small for a grid


def test_a_bad_penalty_names_its_key() -> None:
    with pytest.raises(ValueError, match=r"model.init_args.penalties.sparsity_target must be in \[0, 1\), got 1.5"):
        ConvRBM(data_shape=(1, 8, 8), filter_size=3, penalties={"sparsity_target": 1.5})

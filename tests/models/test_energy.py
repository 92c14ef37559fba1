"""The one home of log Z (:class:`lightning_gm.models.energy.PartitionMixin`) over every energy family, the
parameter groups through LightningCLI, and checkpoints written before the groups existed.

Every family implements two hooks (an annealing path, an exact enumeration); the tests check, for each of them,
that AIS through the mixin agrees with the enumeration, that the runs are split over processes, that the value is
cached per set of parameters and schedule, and that the test metrics and the estimator label are the shared ones.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import lightning.pytorch as pl
import pytest
import torch

from lightning_gm.data import DigitsDataModule
from lightning_gm.estimators.ais import AISSchedule, summarize_log_weights
from lightning_gm.estimators.decoder_ais import HMCAnnealing
from lightning_gm.estimators.partition import log_partition_enumerate
from lightning_gm.models.momentum import MomentumWarmup
from lightning_gm.models import DBM, DBN, GAN, MPDBM, RBM, ConvDBN, ConvRBM, GaussianRBM, SpikeSlabRBM, SubspaceRBM
from lightning_gm.nn.rbm import CD, Penalties, chain_generator
from tests.conftest import ROOT


def _random(m: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("pre_"):
                continue
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


#: tiny members of every energy family (enumerable), as (name, factory)
FAMILIES: list[tuple[str, Callable[[AISSchedule], Any]]] = [
    ("rbm", lambda ais: RBM(data_shape=(6,), n_hidden=4, ais=ais)),
    ("grbm", lambda ais: GaussianRBM(data_shape=(3,), n_hidden=4, ais=ais)),
    ("subspace", lambda ais: SubspaceRBM(data_shape=(6,), n_hidden=2, subspace_size=2, ais=ais)),
    ("ssrbm", lambda ais: SpikeSlabRBM(data_shape=(2,), n_hidden=3, ais=ais)),
    ("dbn", lambda ais: DBN(data_shape=(5,), hidden=[4, 5], epochs_per_layer=[1, 1], ais=ais)),
    ("conv_rbm", lambda ais: ConvRBM(data_shape=(1, 4, 4), n_filters=2, filter_size=2, pool_size=2, ais=ais)),
    ("dbm", lambda ais: DBM(data_shape=(5,), hidden=[4, 3], epochs_per_layer=[0, 0], ais=ais)),
    ("mpdbm", lambda ais: MPDBM(data_shape=(5,), hidden=[4, 3], test_loglik=True, centered=False, ais=ais)),
]
SCALE = {"grbm": 0.5, "ssrbm": 0.3, "dbn": 0.8, "conv_rbm": 0.8}


def _model(name: str, factory, ais: AISSchedule, seed: int = 0):
    torch.manual_seed(seed)
    return _random(factory(ais).double(), seed, SCALE.get(name, 1.0))


@pytest.mark.parametrize("name,factory", FAMILIES, ids=[n for n, _ in FAMILIES])
def test_ais_through_the_mixin_agrees_with_the_enumeration(name: str, factory) -> None:
    m = _model(name, factory, AISSchedule(runs=100, steps=500, exact_max_units=20))
    exact = m.exact_log_partition()
    assert exact is not None and m.partition_estimator == "exact"
    ais = m.compute_log_partition(force_ais=True)
    assert ais.estimator == "ais" and ais.runs == 100 and ais.steps == 500
    assert abs(ais.log_z - exact) < 0.1 + 4 * ais.stderr, (ais.log_z, exact)
    m.ais = m.ais.replace(exact_max_units=0)  # too large to enumerate now: the label says AIS without running it
    assert m.exact_log_partition() is None and m.partition_estimator == "ais"


class _FakeTrainer:
    """What the mixin reads of a trainer under DDP (``world_size``, ``global_rank``) and of its progress bar."""

    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank
        self.is_global_zero, self.progress_bar_callback, self.received_sigterm = global_rank == 0, None, False


@pytest.mark.parametrize("name,factory", FAMILIES, ids=[n for n, _ in FAMILIES])
def test_runs_are_split_over_processes(name: str, factory) -> None:
    """Two processes each run ceil(runs / 2) chains from chain_generator(seed, rank); every process summarises
    the same gathered weights, equal to those of the two halves run by hand."""
    schedule = AISSchedule(runs=7, steps=10, seed=3, exact_max_units=0)
    halves = []
    for rank in (0, 1):
        m = _model(name, factory, schedule)
        m._trainer = _FakeTrainer(1, 0)
        m.ais = schedule.replace(runs=4, seed=3)
        # one process with rank r's generator: patch the rank only
        m._world = lambda rank=rank: (1, rank)  # type: ignore[method-assign]
        halves.append(m.compute_log_partition().log_weights)
    m = _model(name, factory, schedule)
    m._trainer = _FakeTrainer(2, 0)
    m.all_gather = lambda t: torch.stack([t, halves[1].to(t)])  # type: ignore[method-assign]
    lp = m.compute_log_partition()
    want = torch.cat(halves)[:7]
    torch.testing.assert_close(lp.log_weights, want, rtol=0, atol=0)
    assert lp.runs == 7 and lp.log_z == summarize_log_weights(want, lp.ais.log_z_base).log_z
    m._trainer = None


def test_log_z_is_cached_per_parameters_and_schedule(monkeypatch) -> None:
    m = RBM(data_shape=(6,), n_hidden=4, ais=AISSchedule(runs=5, steps=10, exact_max_units=0))
    calls = []
    real = m.compute_log_partition
    monkeypatch.setattr(m, "compute_log_partition", lambda **kw: calls.append(1) or real(**kw))
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    first = m.log_prob(x)
    torch.testing.assert_close(m.log_prob(x), first)
    assert len(calls) == 1  # every test batch reuses it
    with torch.no_grad():
        m.rbm.W.add_(0.1)
    m.log_prob(x)
    assert len(calls) == 2  # new parameters: new log Z
    m.ais = m.ais.replace(steps=20)
    assert m.ensure_log_partition().steps == 20 and len(calls) == 3
    m.chains.add_(1.0)  # the persistent chains never change Z
    m.ensure_log_partition()
    assert len(calls) == 3


@pytest.mark.parametrize("runs,steps,label", [(100, 14500, "ais"), (100, 1000, "ais 100x1,000"),
                                              (1000, 14500, "ais 1,000x14,500")])
def test_the_label_states_a_schedule_other_than_the_full_protocol(runs: int, steps: int, label: str) -> None:
    ais = AISSchedule(runs=runs, steps=steps, exact_max_units=0)
    assert RBM(data_shape=(6,), n_hidden=4, ais=ais).estimator == label
    dbm = DBM(data_shape=(6,), hidden=[4, 3], epochs_per_layer=[0, 0], ais=ais)
    assert dbm.estimator == label.replace("ais", "ais+meanfield")
    dbn = DBN(data_shape=(6,), hidden=[4, 3], epochs_per_layer=[1, 1], ais=ais)
    assert dbn.estimator == label.replace("ais", "ais+bound")


def test_test_metrics_are_the_shared_names(tmp_path) -> None:
    pl.seed_everything(0)
    dm = DigitsDataModule(binarize="static", batch_size=100, val_size=200)
    m = RBM(data_shape=dm.shape, n_hidden=6, cd=CD(chains=20), sample_steps=2,
            ais=AISSchedule(runs=20, steps=50, exact_max_units=0))
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                         accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    trainer.fit(m, dm)
    out = trainer.test(m, dm, verbose=False)[0]
    names = {"test/nll", "test/nll_stderr", "test/logZ", "test/logZ_stderr", "test/logZ_lower", "test/logZ_upper",
             "test/nll_lower", "test/nll_upper", "test/ais_ess", "test/ais_runs", "test/ais_steps"}
    assert names <= set(out), names - set(out)
    assert out["test/ais_runs"] == 20 and out["test/ais_steps"] == 50 and 1 <= out["test/ais_ess"] <= 20
    assert out["test/nll_upper"] - out["test/nll"] == pytest.approx(out["test/logZ_upper"] - out["test/logZ"], abs=1e-4)


# ------------------------------------------------------------------------------------------- parameter groups
def _print_config(run_cli, capsys, *args: str) -> str:
    assert run_cli("fit", *args, "--print_config") == 0
    return capsys.readouterr().out


def test_groups_are_nested_blocks_of_the_cli(run_cli, capsys) -> None:
    base = ["--config", str(ROOT / "conf" / "rbm.yaml")]
    out = _print_config(run_cli, capsys, *base, "--model.init_args.cd.k=3")
    assert "    cd:\n      k: 3\n      persistent: true\n      chains: 100\n" in out
    assert "    ais:\n      runs: 100\n      steps: 14500\n" in out
    assert "num_chains" not in out and "ais_runs" not in out
    # a subclass changes a group's default: the Gaussian RBM trains by CD-k from the data
    out = _print_config(run_cli, capsys, "--model=lightning_gm.models.GaussianRBM", "--data=lightning_gm.data.DigitsDataModule")
    assert "    cd:\n      k: 1\n      persistent: false\n" in out
    assert run_cli("fit", "--model.help", "lightning_gm.models.RBM") == 0
    helped = capsys.readouterr().out
    assert "--model.cd.k K" in helped and "--model.penalties.weight_cost" in helped and "--model.ais.steps" in helped


def test_a_bad_group_value_names_the_key(run_cli, capsys) -> None:
    code = run_cli("fit", "--model=lightning_gm.models.RBM", "--data=lightning_gm.data.DigitsDataModule",
                   "--model.init_args.cd.k=0", "--trainer.logger=false")
    assert code != 0
    err = capsys.readouterr().err
    assert "model.init_args.cd.k must be >= 1, got 0" in err and "Traceback" not in err


def test_the_cli_builds_the_groups_it_prints(run_cli, tmp_path) -> None:
    from lightning_gm.cli import GenerativeCLI

    cli = GenerativeCLI(["--model=lightning_gm.models.RBM", "--data=lightning_gm.data.DigitsDataModule",
                         "--model.init_args.cd.k=3", "--model.init_args.penalties.sparsity_cost=0.5",
                         "--model.init_args.ais.runs=7", "--trainer.logger=false", f"--runs_dir={tmp_path}"], run=False)
    m = cli.model
    assert m.cd == CD(k=3) and m.penalties == Penalties(sparsity_cost=0.5) and m.ais == AISSchedule(runs=7)
    assert m.hparams["cd"] == {"k": 3, "persistent": True, "chains": 100}


# ------------------------------------------------------------------------------------------- old checkpoints
#: hyperparameters as the code before the parameter groups wrote them
FLAT = {
    RBM: dict(data_shape=[64], n_hidden=5, k=3, persistent=True, num_chains=20, weight_std=0.01, weight_cost=0.001,
              sparsity_target=0.2, sparsity_cost=0.0, sparsity_decay=0.9, initial_momentum=0.4, momentum_warmup_epochs=3,
              init_visible_bias=True, monitor_examples=1000, sample_steps=10, ais_runs=50, ais_steps=300, ais_seed=4,
              exact_max_units=0, update_batch_size=None),
    DBM: dict(data_shape=[64], hidden=[5, 4], epochs_per_layer=[1, 1], pretrain_cd_k=1, mf_iterations=10, mf_tol=1e-6,
              num_chains=10, gibbs_steps=5, weight_cost=2e-4, max_norm=None, lr_decay=0.0, joint_lr_scale=0.02,
              centered=False, offset_rate=0.01, weight_std=0.01, sample_steps=1000, ais_runs=30, ais_steps=200,
              ais_seed=1, exact_max_units=0),
    DBN: dict(data_shape=[64], hidden=[5, 4], epochs_per_layer=[1, 1], k=2, persistent=True, num_chains=7, propagate="mean",
              weight_std=0.01, weight_cost=2e-4, initial_momentum=0.3, momentum_warmup_epochs=2, init_visible_bias=True,
              sample_steps=10, bound_samples=3, ais_runs=20, ais_steps=100, ais_seed=2, exact_max_units=0),
    MPDBM: dict(data_shape=[64], hidden=[5, 4], n_classes=0, mf_steps=3, mask_prob=0.5, mask_per_example=True,
                classify_prob=0.0, multi_inference=False, centered=True, weight_cost=0.0, weight_std=0.05, eval_seed=0,
                test_loglik=True, sample_steps=10, ais_runs=12, ais_steps=90, ais_seed=3, exact_max_units=0),
    ConvRBM: dict(data_shape=[1, 8, 8], n_filters=3, filter_size=3, pool_size=2, visible="binary", k=2, persistent=True,
                  num_chains=6, weight_std=0.01, weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=1.0,
                  init_visible_bias=True, sample_steps=10, ais_runs=9, ais_steps=80, ais_seed=5, exact_max_units=0),
    ConvDBN: dict(data_shape=[1, 12, 12], n_filters=[3, 2], filter_size=[3, 2], pool_size=[2, 1], epochs_per_layer=[1, 1],
                  visible="binary", k=4, weight_std=0.01, weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=2.0,
                  init_visible_bias=True, sample_steps=10, down_steps=2),
    GAN: dict(data_shape=[64], latent_dim=3, generator=None, discriminator=None, hidden=[8], discriminator_hidden=[8],
              generator_loss="non_saturating", d_steps=1, obs_sigma=0.2, ais_chains=4, ais_steps=7, ais_leapfrog_steps=2,
              ais_step_size=0.1, ais_target_accept=0.6, val_ais_examples=0, eval_seed=5),
}
GROUPS = {
    RBM: {"cd": CD(k=3, chains=20), "penalties": Penalties(weight_cost=0.001, sparsity_target=0.2, sparsity_decay=0.9),
          "momentum": MomentumWarmup(initial=0.4, epochs=3), "ais": AISSchedule(runs=50, steps=300, seed=4, exact_max_units=0)},
    DBM: {"ais": AISSchedule(runs=30, steps=200, seed=1, exact_max_units=0)},
    DBN: {"cd": CD(k=2, chains=7), "momentum": MomentumWarmup(initial=0.3, epochs=2), "ais": AISSchedule(runs=20, steps=100, seed=2, exact_max_units=0)},
    MPDBM: {"ais": AISSchedule(runs=12, steps=90, seed=3, exact_max_units=0)},
    ConvRBM: {"cd": CD(k=2, chains=6), "penalties": Penalties(weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=1.0),
              "ais": AISSchedule(runs=9, steps=80, seed=5, exact_max_units=0)},
    ConvDBN: {"cd": CD(k=4, persistent=False),
              "penalties": Penalties(weight_cost=1e-4, sparsity_target=0.05, sparsity_cost=2.0)},
    GAN: {"ais": HMCAnnealing(chains=4, steps=7, leapfrog_steps=2, step_size=0.1, target_accept=0.6, seed=5)},
}


def _old_checkpoint(cls: type, path, cli: bool) -> dict:
    """A checkpoint in the old format: the state of a model built from the flat keys, with flat hyperparameters
    (as written by Python code, or by the lightning_gm command with its class path)."""
    flat = dict(FLAT[cls])
    upgrade = getattr(cls, "upgrade_hparams", dict)
    model = cls(**upgrade(flat))  # the same model, built by today's code
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    hparams = dict(flat)
    if cli:
        hparams.update(_class_path=f"{cls.__module__}.{cls.__qualname__}",
                       _instantiator="lightning.pytorch.cli.instantiate_module")
    ckpt["hyper_parameters"] = hparams
    torch.save(ckpt, path)
    return ckpt["state_dict"]


@pytest.mark.parametrize("cls", [RBM, DBM, DBN, MPDBM, ConvRBM, ConvDBN, GAN], ids=lambda c: c.__name__)
@pytest.mark.parametrize("cli", [False, True], ids=["python", "cli"])
def test_a_checkpoint_with_flat_hyperparameters_still_loads(cls: type, cli: bool, tmp_path) -> None:
    path = tmp_path / "old.ckpt"
    state = _old_checkpoint(cls, path, cli)
    m = cls.load_from_checkpoint(path)
    for name, group in GROUPS[cls].items():
        assert getattr(m, name) == group
        assert m.hparams[name] == group.as_dict()  # written back in the new format
    flat_keys = {"k", "persistent", "ais_runs", "ais_steps", "ais_seed", "exact_max_units", "weight_cost",
                 "sparsity_target", "sparsity_cost", "sparsity_decay", "ais_chains", "ais_leapfrog_steps",
                 "ais_step_size", "ais_target_accept", "eval_seed", "initial_momentum", "momentum_warmup_epochs"}
    if cls not in (DBM, MPDBM):  # the DBMs keep their own num_chains (not the RBM groups)
        flat_keys.add("num_chains")
    if cls not in (RBM, ConvRBM, ConvDBN):  # the others keep their own weight cost (no penalties group)
        flat_keys -= {"weight_cost", "sparsity_target", "sparsity_cost"}
    if cls is MPDBM:  # its own eval_seed (the masks'), not the GAN's AIS seed
        flat_keys -= {"eval_seed"}
    assert not flat_keys & set(m.hparams), flat_keys & set(m.hparams)
    for key, value in m.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    # and saved again, it loads in the new format, with weights_only
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    assert torch.load(tmp_path / "new.ckpt", weights_only=True)["hyper_parameters"][next(iter(GROUPS[cls]))]
    again = cls.load_from_checkpoint(tmp_path / "new.ckpt")
    assert all(getattr(again, n) == g for n, g in GROUPS[cls].items())


def test_the_command_tests_an_old_checkpoint(run_cli, tmp_path) -> None:
    """``lightning_gm test --model=... --ckpt_path old.ckpt`` (no --config: the model comes from the checkpoint's
    hyperparameters): the flat keys come back as the groups."""
    _old_checkpoint(RBM, tmp_path / "old.ckpt", cli=True)
    assert run_cli("test", "--model=lightning_gm.models.RBM", f"--ckpt_path={tmp_path / 'old.ckpt'}",
                   "--data=lightning_gm.data.DigitsDataModule",
                   "--data.init_args.binarize=static", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                   "--experiment=old", "--run_name=r", "--trainer.limit_test_batches=1") == 0
    summary = json.loads((tmp_path / "runs/old/r/summary.json").read_text())
    assert summary["estimator"] == "ais 50x300" and summary["test"]["test/ais_runs"] == 50
    assert math.isfinite(summary["test"]["test/nll"])


# ------------------------------------------------------------------------------------------- a recipe's phase
def _digits_trainer(tmp_path, epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                      accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(tmp_path))


def test_a_dbm_stopped_in_pretraining_reports_no_nll_and_says_why(tmp_path) -> None:
    """epochs_per_layer [2, 2], one epoch: the layers were never composed into a DBM. The test logs its other
    metrics but no test/nll, the label and summary fields say which phase it stopped in; the same from the
    checkpoint (the phase travels with the weights)."""
    pl.seed_everything(0)
    dm = DigitsDataModule(binarize="static", batch_size=100, val_size=200)
    m = DBM(data_shape=dm.shape, hidden=[8, 6], epochs_per_layer=[2, 2], num_chains=10, sample_steps=2,
            ais=AISSchedule(runs=10, steps=20, exact_max_units=0))
    trainer = _digits_trainer(tmp_path, 1)
    trainer.fit(m, dm)
    out = trainer.test(m, dm, verbose=False)[0]
    assert "test/nll" not in out and "test/logZ" not in out and "test/recon_error" in out
    assert m.estimator == "none (pretraining phase 1 of 2: no DBM composed yet)"
    fields = m.summary_fields()
    assert fields["phase"] == "pretraining phase 1 of 2: no DBM composed yet"
    assert any("no test NLL is given" in w for w in fields["warnings"])
    loaded = DBM.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert not loaded.has_test_likelihood and loaded.estimator == m.estimator
    # past the pretraining epochs the DBM is composed and tested as usual
    trainer = _digits_trainer(tmp_path / "full", 5)
    trainer.fit(m, dm)
    out = trainer.test(m, dm, verbose=False)[0]
    assert math.isfinite(out["test/nll"]) and m.estimator == "ais+meanfield 10x20" and "phase" not in m.summary_fields()


def test_a_dbn_stopped_early_is_scored_as_the_dbn_it_trained(tmp_path) -> None:
    """epochs_per_layer [1, 1, 1], two epochs: the greedy recipe has produced a 2-layer DBN. Its test/nll is that
    model's (the top RBM is layer 2, the bound runs over one hidden layer), the label says so."""
    pl.seed_everything(0)
    dm = DigitsDataModule(binarize="static", batch_size=100, val_size=200)
    m = DBN(data_shape=dm.shape, hidden=[8, 6, 5], epochs_per_layer=[1, 1, 1], sample_steps=2,
            ais=AISSchedule(exact_max_units=10))
    assert m.depth == 3  # built by hand: the whole stack
    trainer = _digits_trainer(tmp_path, 2)
    trainer.fit(m, dm)
    assert m.depth == 2 and m.estimator == "bound (greedy phase: 2 of 3 layers trained)"
    out = trainer.test(m, dm, verbose=False)[0]
    assert math.isfinite(out["test/nll"])
    assert m.log_z.log_z == pytest.approx(log_partition_enumerate(m.rbms[1]), abs=1e-9)  # layer 2 is the top
    x = dm.splits["test"][0][:4]
    assert len(m.sample_posterior(x, 3)) == 1 and m.log_weights(x, m.sample_posterior(x, 3)).shape == (3, 4)
    assert any("2-layer DBN" in w for w in m.summary_fields()["warnings"])
    trainer = _digits_trainer(tmp_path / "full", 3)  # the top layer's phase begins: the whole recipe
    trainer.fit(m, dm)
    assert m.depth == 3 and m.estimator == "bound" and "phase" not in m.summary_fields()


def test_the_dbn_warms_its_momentum_up_again_in_every_layers_phase(tmp_path) -> None:
    """MomentumWarmup: ``initial`` for the first ``epochs`` epochs of each greedy phase (every layer is a new RBM,
    with no momentum from the one below), then the optimiser's own; the RBM counts from the fit's start."""
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
            if batch_idx == 0:  # (after the model's on_train_epoch_start)
                seen.append(trainer.optimizers[0].param_groups[0]["momentum"])

    torch.manual_seed(0)
    data = torch.bernoulli(torch.full((20, 16), 0.3))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=10)
    model = DBN(data_shape=(16,), hidden=[6, 4], epochs_per_layer=[3, 3], momentum=MomentumWarmup(initial=0.2, epochs=2),
                optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.8), init_visible_bias=False)
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(model, loader)
    assert seen == [0.2, 0.2, 0.8, 0.2, 0.2, 0.8]
    with pytest.raises(ValueError, match="model.init_args.momentum.initial"):
        MomentumWarmup(initial=1.0)

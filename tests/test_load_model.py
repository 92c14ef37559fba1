"""Trained models come back from their checkpoints in Python: ``Model.load_from_checkpoint(ckpt)`` and
``lightning_gm.load_model(run_dir)`` rebuild the injected modules (likelihood, prior, PixelCNN decoder,
generator, discriminator) from the configuration the ``lightning_gm`` command saved, with the same parameters
and the same outputs; a checkpoint that does not record an injected argument is refused by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import lightning_gm
import lightning_gm.errors
from lightning_gm.cli import GenerativeCLI, main
from lightning_gm.models import GAN, VAE, CheckpointLoadError
from lightning_gm.nn import BernoulliLikelihood, GaussianLikelihood, PixelCNNLikelihood, VampPrior
from lightning_gm.nn.generators import MLPDiscriminator, MLPGenerator
from tests.conftest import ROOT, needs_mnist

TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--test_after_fit=false"]

VAMP_GAUSS = ["--config", str(ROOT / "conf" / "vae_digits.yaml"), "--data.init_args.binarize=none",
              "--model.init_args.likelihood=lightning_gm.nn.GaussianLikelihood",
              "--model.init_args.likelihood.init_args.learn_variance=true",
              "--model.init_args.prior=lightning_gm.nn.VampPrior",
              "--model.init_args.prior.init_args.num_components=5", "--model.init_args.evaluation.test_k=4"]
PIXELCNN = ["--config", str(ROOT / "conf" / "vae_pixelcnn.yaml"), "--data.init_args.batch_size=8",
            "--data.init_args.eval_batch_size=8", "--model.init_args.latent_dim=4", "--model.init_args.hidden=[16]",
            "--model.init_args.likelihood.init_args.channels=4", "--model.init_args.likelihood.init_args.n_layers=2",
            "--model.init_args.likelihood.init_args.head_channels=8", "--model.init_args.evaluation.test_k=2"]
GAN_ARGS = ["--config", str(ROOT / "conf" / "gan.yaml"), "--data.init_args.batch_size=8",
            "--data.init_args.eval_batch_size=8", "--model.init_args.latent_dim=3",
            "--model.init_args.generator.init_args.hidden=[16]",
            "--model.init_args.discriminator.init_args.hidden=[12]", "--model.init_args.ais.chains=2",
            "--model.init_args.ais.steps=2", "--model.init_args.val_ais_examples=0"]


def _fit(cwd: Path, name: str, args: list[str]) -> tuple[pl.LightningModule, Path]:
    """Train through the CLI's Python entry; the trained model and its run folder."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        cli = GenerativeCLI(args=["fit", *args, f"--run_name={name}", *TINY])
    finally:
        os.chdir(old)
    run = cwd / "runs" / cli.config.fit.experiment / name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return cli.model, run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("load"), {}


def _trained(runs, name: str, args: list[str]):
    cwd, cache = runs
    if name not in cache:
        cache[name] = _fit(cwd, name, args)
    return cache[name]


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k


def _same_modules(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert [(n, type(m)) for n, m in a.named_modules()] == [(n, type(m)) for n, m in b.named_modules()]


def _seeded(fn, *args):
    torch.manual_seed(123)
    with torch.no_grad():
        return fn(*args)


def _vae_batch(model: VAE) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, *model.data_shape, generator=g)


def _save(model: pl.LightningModule, path: Path) -> Path:
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def test_vae_with_gaussian_likelihood_and_vampprior_loads_as_trained(runs, tmp_path):
    trained, run = _trained(runs, "vamp", VAMP_GAUSS)
    assert isinstance(trained.likelihood, GaussianLikelihood) and isinstance(trained.prior, VampPrior)
    ckpt = run / "checkpoints" / "last.ckpt"
    for loaded in (VAE.load_from_checkpoint(ckpt), lightning_gm.load_model(run)):
        assert type(loaded) is VAE
        assert isinstance(loaded.likelihood, GaussianLikelihood) and loaded.likelihood.learn_variance
        assert isinstance(loaded.prior, VampPrior) and loaded.prior.pseudo_inputs.shape == (5, 64)
        _same_modules(trained, loaded)
        _assert_same_state(trained, loaded)
        assert loaded.test_k == 4
        trained.eval(), loaded.eval()
        x = _vae_batch(trained)
        expected = _seeded(trained.log_prob, x)
        assert torch.equal(_seeded(loaded.log_prob, x), expected)
        assert torch.equal(_seeded(lambda v: loaded.loss_terms(v, "val")["elbo"], x),
                           _seeded(lambda v: trained.loss_terms(v, "val")["elbo"], x))
    # the default modules would be a different model: Bernoulli likelihood, N(0, I) prior
    default = VAE(data_shape=(64,), latent_dim=8, hidden=[64, 64])
    assert isinstance(default.likelihood, BernoulliLikelihood) and not isinstance(default.prior, VampPrior)
    # a loaded model saves its configuration again, so its own checkpoint loads too
    again = VAE.load_from_checkpoint(_save(VAE.load_from_checkpoint(ckpt), tmp_path / "again.ckpt"))
    assert isinstance(again.prior, VampPrior) and isinstance(again.likelihood, GaussianLikelihood)
    _assert_same_state(trained, again)


def test_checkpoint_records_the_optimizer_config(runs):
    trained, run = _trained(runs, "vamp", VAMP_GAUSS)
    loaded = VAE.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    opt = loaded.configure_optimizers()
    opt = opt[0] if isinstance(opt, (list, tuple)) else opt
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 0.003  # conf/vae_digits.yaml's lr


@needs_mnist
def test_pixelcnn_vae_loads_as_trained(runs):
    trained, run = _trained(runs, "pixelcnn", PIXELCNN)
    loaded = lightning_gm.load_model(run / "checkpoints" / "last.ckpt")
    assert type(loaded) is VAE and isinstance(loaded.likelihood, PixelCNNLikelihood)
    _same_modules(trained, loaded)
    _assert_same_state(trained, loaded)
    trained.eval(), loaded.eval()
    x = (torch.rand(3, *trained.data_shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert torch.equal(_seeded(loaded.log_prob, x), _seeded(trained.log_prob, x))


@needs_mnist
def test_gan_loads_as_trained(runs):
    trained, run = _trained(runs, "gan", GAN_ARGS)
    for loaded in (GAN.load_from_checkpoint(run / "checkpoints" / "last.ckpt"), lightning_gm.load_model(run)):
        assert type(loaded) is GAN
        assert isinstance(loaded.generator, MLPGenerator) and isinstance(loaded.discriminator, MLPDiscriminator)
        _same_modules(trained, loaded)
        _assert_same_state(trained, loaded)
        trained.eval(), loaded.eval()
        z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
        x = torch.rand(5, *trained.data_shape, generator=torch.Generator().manual_seed(3))
        assert torch.equal(_seeded(loaded.generate, z), _seeded(trained.generate, z))
        assert torch.equal(_seeded(loaded.logits, x), _seeded(trained.logits, x))


def test_python_built_model_with_an_object_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    model = VAE(data_shape=(6,), latent_dim=2, hidden=[5], likelihood=GaussianLikelihood(), evaluation={"test_k": 3})
    ckpt = _save(model, tmp_path / "py.ckpt")
    with pytest.raises(CheckpointLoadError) as info:
        VAE.load_from_checkpoint(ckpt)
    msg = str(info.value)
    assert "`likelihood`" in msg and "likelihood=..." in msg and "prior" not in msg and str(ckpt) in msg
    with open(ckpt, "rb") as f:  # a file object as well as a path
        with pytest.raises(CheckpointLoadError, match="`likelihood`"):
            VAE.load_from_checkpoint(f)
    # passing it again gives the saved model back
    loaded = VAE.load_from_checkpoint(ckpt, likelihood=GaussianLikelihood())
    _assert_same_state(model, loaded)
    model.eval(), loaded.eval()
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_seeded(loaded.log_prob, x), _seeded(model.log_prob, x))
    # a Python-built model with only default modules loads without help
    plain = VAE(data_shape=(6,), latent_dim=2, hidden=[5])
    _assert_same_state(plain, VAE.load_from_checkpoint(_save(plain, tmp_path / "plain.ckpt")))


def test_old_cli_checkpoint_without_module_config_is_refused_by_name(runs, tmp_path, monkeypatch, capsys):
    trained, run = _trained(runs, "vamp", VAMP_GAUSS)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for key in ("likelihood", "prior", "encoder", "decoder", "posterior_flow", "optimizer", "lr_scheduler"):
        ckpt["hyper_parameters"].pop(key)  # what the command saved before injected modules were kept
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    for load in (VAE.load_from_checkpoint, lightning_gm.load_model):  # no config.yaml beside it
        with pytest.raises(CheckpointLoadError) as info:
            load(old)
        msg = str(info.value)
        named = msg.split("argument(s) ")[1].split(":")[0]  # the subclass's own arguments first, then its parent's
        assert named == "`prior`, `encoder`, `decoder`, `posterior_flow`, `likelihood`" and "config.yaml" in msg
        assert "optimizer" not in msg.split(":")[1]
    # still in its run folder, load_model takes the modules from the run's config.yaml
    (tmp_path / "oldrun" / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, tmp_path / "oldrun" / "checkpoints" / "last.ckpt")
    (tmp_path / "oldrun" / "config.yaml").write_text((run / "config.yaml").read_text())
    loaded = lightning_gm.load_model(tmp_path / "oldrun")
    assert isinstance(loaded.prior, VampPrior) and isinstance(loaded.likelihood, GaussianLikelihood)
    _assert_same_state(trained, loaded)
    # the command refuses it too when no --config gives the modules
    monkeypatch.chdir(tmp_path)
    assert main(["test", "--model=lightning_gm.models.VAE", "--data=lightning_gm.data.DigitsDataModule",
                 "--ckpt_path", str(old), "--trainer.logger=false"]) == 1
    err = capsys.readouterr().err
    assert "prior, encoder, decoder, posterior_flow, likelihood" in err and "--config" in err


def test_load_model_errors_name_the_path(tmp_path):
    with pytest.raises(lightning_gm.errors.LightningGMError, match="neither a checkpoint file nor a run folder"):
        lightning_gm.load_model(tmp_path / "nope")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(lightning_gm.errors.LightningGMError, match="no checkpoint in"):
        lightning_gm.load_model(tmp_path / "run")
    model = VAE(data_shape=(6,), latent_dim=2, hidden=[5])
    ckpt = _save(model, tmp_path / "plain.ckpt")
    with pytest.raises(lightning_gm.errors.LightningGMError, match="does not name its model class"):
        lightning_gm.load_model(ckpt)


def test_a_data_only_config_does_not_replace_the_checkpoint_model(run_cli, tmp_path):
    """``lightning_gm test --config data.yaml --model=VAE --ckpt_path old.ckpt``: a --config without a model block
    leaves the model to the checkpoint (not the class defaults), and an old checkpoint's flat keys are folded into
    the groups: the tested model has the checkpoint's architecture and evaluation."""
    import yaml

    torch.manual_seed(0)
    model = VAE(data_shape=(64,), latent_dim=3, hidden=[7], evaluation={"test_k": 7})
    path = tmp_path / "old.ckpt"
    _save(model, path)
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"] = {  # as the command wrote them before the parameter groups
        "_class_path": "lightning_gm.models.VAE", "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "data_shape": [64], "latent_dim": 3, "hidden": [7], "activation": "tanh",
        "likelihood": {"class_path": "lightning_gm.nn.BernoulliLikelihood"}, "prior": None, "encoder": None,
        "decoder": None, "posterior_flow": None, "context_features": 0, "posterior_mean_samples": 100, "beta": 1.0,
        "kl_warmup_epochs": 0, "free_bits": 0.0, "train_k": 1, "val_k": 0, "test_k": 7, "chunk_size": 500,
        "eval_seed": 0, "update_batch_size": None}
    torch.save(ckpt, path)
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"data": {"class_path": "lightning_gm.data.DigitsDataModule",
                                             "init_args": {"binarize": "static"}},
                                    "trainer": {"logger": False, "enable_progress_bar": False}}))
    assert run_cli("test", "--config", str(data), "--model=lightning_gm.models.VAE", f"--ckpt_path={path}",
                   "--experiment=old", "--run_name=r") == 0
    summary = json.loads((tmp_path / "runs/old/r/summary.json").read_text())
    assert summary["estimator"] == "iwae-7"  # the checkpoint's test_k, not the default 5000
    assert summary["num_parameters"] == sum(p.numel() for p in model.parameters())  # 64-7-3, not 784-200-200-50


def test_command_line_model_options_win_over_the_checkpoint(run_cli, tmp_path):
    """``lightning_gm test --model=VAE --ckpt_path x.ckpt --model.init_args.evaluation.test_k 3``: the checkpoint
    rebuilds the model, and the model options written on the command line (either spelling) change it."""
    torch.manual_seed(0)
    model = VAE(data_shape=(64,), latent_dim=3, hidden=[7], evaluation={"test_k": 7})
    path = _save(model, tmp_path / "m.ckpt")
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"]["_class_path"] = "lightning_gm.models.VAE"  # as the command saves it
    torch.save(ckpt, path)
    common = ["--model=lightning_gm.models.VAE", f"--ckpt_path={path}", "--data=lightning_gm.data.DigitsDataModule",
              "--data.init_args.binarize=static", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              "--experiment=e"]
    assert run_cli("test", *common, "--run_name=kept") == 0
    assert run_cli("test", *common, "--model.init_args.evaluation.test_k", "3", "--run_name=set") == 0
    assert run_cli("test", *common, "--model.init_args.evaluation.test_k=2", "--model.init_args.evaluation.seed=5",
                   "--run_name=set2") == 0
    label = {r: json.loads((tmp_path / f"runs/e/{r}/summary.json").read_text())["estimator"]
             for r in ("kept", "set", "set2")}
    assert label == {"kept": "iwae-7", "set": "iwae-3", "set2": "iwae-2"}
    summary = json.loads((tmp_path / "runs/e/set/summary.json").read_text())
    assert summary["num_parameters"] == sum(p.numel() for p in model.parameters())  # still the checkpoint's 64-7-3


def test_a_bare_checkpoint_test_works_in_the_checkpoints_run_folder(run_cli, tmp_path):
    """``lightning_gm test --model=VAE --ckpt_path runs/vae_digits/r/checkpoints/last.ckpt`` (no --config): the test
    is recorded in that run's folder (its summary, a test-<time>.yaml), not in a new runs/default/<time>."""
    assert run_cli("fit", "--config", str(ROOT / "conf" / "vae_digits.yaml"), "--run_name=r", *TINY) == 0
    assert run_cli("test", "--model=lightning_gm.models.VAE", "--ckpt_path=runs/vae_digits/r/checkpoints/last.ckpt",
                   "--data=lightning_gm.data.DigitsDataModule", "--model.init_args.evaluation.test_k=4",
                   "--trainer.logger=false", "--trainer.enable_progress_bar=false") == 0
    assert not (tmp_path / "runs" / "default").exists()
    run = tmp_path / "runs" / "vae_digits" / "r"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estimator"] == "iwae-4" and [h["command"] for h in summary["history"]] == ["fit", "test"]
    assert len(list(run.glob("test-*.yaml"))) == 1

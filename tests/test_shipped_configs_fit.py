"""Every shipped config, as shipped (its real architecture, data and recipe), fits for one training batch through
the ``lightning_gm`` command and comes back from its run folder with ``lightning_gm.load_model``: the same class,
the same state dict as the checkpoint (every tensor equal) and the same hyperparameters.

Real architectures on full MNIST make this a few minutes for the 38 configs, so it is marked ``slow``:
``pytest -m slow tests/test_shipped_configs_fit.py``. ``tests/test_configs.py`` resolves every config in the
default run, and ``tests/models/test_contract.py`` round-trips every family at small sizes."""

from __future__ import annotations

import pytest
import torch
import yaml

import lightning_gm
from tests.conftest import ROOT, needs_mnist

SHIPPED = sorted(p.name for p in (ROOT / "conf").glob("*.yaml"))
ONE_BATCH = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
             "--test_after_fit=false", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false", "--run_name=one-batch"]
#: a flow with batch norm validates with the statistics of ``batch_norm_examples`` training images under the current
#: parameters: the recipes' 10,000 take a RealNVP ~20 min of CPU per validation, so one batch validates with 200
LIGHTER = {"realnvp_mnist.yaml": ["--model.init_args.batch_norm_examples=200"],
           "maf_mnist.yaml": ["--model.init_args.batch_norm_examples=200"]}


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_fits_one_batch_and_loads_back(run_cli, tmp_path, config):
    assert run_cli("fit", "--config", str(ROOT / "conf" / config), *ONE_BATCH, *LIGHTER.get(config, [])) == 0
    run = tmp_path / "runs" / config[:-5] / "one-batch"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    trained = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert trained == 1 and ckpt["epoch"] == 0, f"{config}: last.ckpt holds {trained} batches of epoch {ckpt['epoch']}"

    model = lightning_gm.load_model(run)
    assert type(model) is lightning_gm.imported_class(saved["model"]["class_path"])
    state = model.state_dict()
    assert state.keys() == ckpt["state_dict"].keys()
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(state[key], value), f"{config}: {key} differs after loading"
    assert dict(model.hparams) == dict(ckpt["hyper_parameters"])

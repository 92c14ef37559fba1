"""The shipped configs as composed files: every ``conf/*.yaml`` resolves (its ``config:`` includes applied, its
interpolations resolved), an overlay equals the config it includes plus exactly its own differences, an interpolated
value follows the command line, a run is named after the file the user named, and a run folder's ``config.yaml``
is the resolved configuration, which fits again without ``conf/``.

The parser is LightningCLI's own (captured once, no model is built), so resolving all configs costs their parsing."""

from __future__ import annotations

import math
import os

import pytest
import yaml
from jsonargparse import capture_parser

from lightning_gm.cli import GenerativeCLI
from tests.conftest import ROOT, needs_mnist

CONF = ROOT / "conf"
SHIPPED = sorted(p.name for p in CONF.glob("*.yaml"))


@pytest.fixture(scope="module")
def parser():
    """The ``lightning_gm`` parser (LightningCLI with its subcommands), captured before anything is built."""
    return capture_parser(lambda: GenerativeCLI(args=["fit"]))


def resolve(parser, config: str, *overrides: str) -> dict:
    """``lightning_gm fit --config conf/<config> <overrides> --print_config`` as a dict, in-process."""
    cfg = parser.parse_args(["fit", "--config", str(CONF / config), *overrides])
    return yaml.safe_load(parser.dump(cfg, skip_none=False))["fit"]


def flat(data, prefix: str = "") -> dict:
    """Dotted keys -> values (lists of dicts, e.g. callbacks, stay one value)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict = {}
    for key, value in data.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(a: dict, b: dict) -> dict:
    fa, fb = flat(a), flat(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_resolves_completely(parser, config):
    resolved = resolve(parser, config)
    text = yaml.safe_dump(resolved)
    assert "${" not in text and "config" not in resolved  # interpolations resolved, includes applied
    assert resolved["model"]["class_path"].startswith("lightning_gm.models.")
    assert resolved["data"]["class_path"].startswith("lightning_gm.data.")
    assert resolved["seed_everything"] == 0  # from conf/base/trainer.yaml, which every config includes
    kinds = [lg["class_path"].rsplit(".", 1)[-1] for lg in resolved["trainer"]["logger"]]
    assert kinds == ["WandbLogger", "CSVLogger"]


@pytest.mark.parametrize("config", ["iwae.yaml", "dbm3.yaml", "rbm_cd25.yaml", "vae_planar.yaml", "dcgan.yaml"])
def test_a_resolved_overlay_is_a_complete_config(parser, config):
    """What ``--print_config`` (and a run's config.yaml) holds, parsed again without conf/, resolves to itself."""
    resolved = resolve(parser, config)
    again = parser.parse_args(["fit", "--config", yaml.safe_dump(resolved)])
    assert yaml.safe_load(parser.dump(again, skip_none=False))["fit"] == resolved


def test_iwae_is_vae_trained_on_the_k50_bound(parser):
    vae, iwae = resolve(parser, "vae.yaml"), resolve(parser, "iwae.yaml")
    diff = differences(vae, iwae)
    assert set(diff) == {"model.init_args.objective.train_k", "trainer.callbacks"}
    assert diff["model.init_args.objective.train_k"] == (1, 50)
    assert iwae["model"]["init_args"]["optimizer"] == vae["model"]["init_args"]["optimizer"]
    assert iwae["model"]["init_args"]["optimizer"]["init_args"]["eps"] == 1e-4  # Burda's Adam, from vae.yaml
    assert iwae["trainer"]["max_epochs"] == 3280 and iwae["data"]["init_args"]["batch_size"] == 1000
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in iwae["trainer"]["callbacks"]]
    assert callbacks == ["SamplePictures", "LatentPictures", "SampleQuality"]


@pytest.mark.parametrize("base, overlay, expected", [
    ("dbm.yaml", "dbm3.yaml", {"model.init_args.hidden": ([500, 1000], [500, 500, 1000]),
                               "model.init_args.epochs_per_layer": ([100, 200], [100, 100, 200]),
                               "trainer.max_epochs": (600, 700)}),
    ("sbn_rws.yaml", "sbn_ws.yaml", {"model.init_args.training": ("rws", "ws"), "model.init_args.k": (5, 1),
                                     "model.init_args.q_update": ("both", "sleep")}),
    ("rbm.yaml", "rbm_cd25.yaml", {"trainer.max_epochs": (100, 200), "model.init_args.cd.k": (1, 25),
                                   "model.init_args.cd.persistent": (True, False),
                                   "model.init_args.momentum.epochs": (0, 5),
                                   "model.init_args.optimizer.init_args.momentum": (0.5, 0.9)}),
])
def test_an_overlay_differs_from_its_base_in_its_own_keys_only(parser, base, overlay, expected):
    assert differences(resolve(parser, base), resolve(parser, overlay)) == expected


@pytest.mark.parametrize("config", ["rbm.yaml", "rbm_cd25.yaml", "subspace_rbm.yaml", "vae.yaml", "iwae.yaml"])
def test_recipe_schedules_follow_the_run_progress(parser, config):
    """The flagship recipes' learning-rate schedules read the run's progress (epochs or max_time), so a
    --trainer.max_time budget compresses them instead of cutting them (lightning_gm.schedules; the command attaches
    the RunProgress callback that feeds them)."""
    from lightning_gm.schedules import ProgressLR

    path = resolve(parser, config)["model"]["init_args"]["lr_scheduler"]["class_path"]
    module, name = path.rsplit(".", 1)
    assert issubclass(getattr(__import__(module, fromlist=[name]), name), ProgressLR), path


@pytest.mark.parametrize("config, key", [("flow_toy.yaml", "T_max")])
def test_interpolated_schedule_length_follows_max_epochs(parser, config, key):
    def length(cfg):
        return cfg["model"]["init_args"]["lr_scheduler"]["init_args"][key]

    resolved = resolve(parser, config)
    assert length(resolved) == resolved["trainer"]["max_epochs"] > 1
    assert length(resolve(parser, config, "--trainer.max_epochs=7")) == 7  # resolved after the command line


def test_an_overlay_run_is_named_after_its_own_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = GenerativeCLI(args=["--config", str(CONF / "iwae.yaml"), "--trainer.logger=false"], run=False)
    assert cli.config.experiment == "iwae"  # not "vae", the file it includes
    assert str(cli.trainer.default_root_dir).startswith(os.path.join("runs", "iwae", ""))
    assert cli.model.objective.train_k == 50


@needs_mnist
@pytest.mark.parametrize("config", ["iwae.yaml", "rbm_cd25.yaml"])
def test_a_composed_config_fits_and_its_run_config_fits_again(run_cli, tmp_path, config, parser):
    one_batch = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                 "--test_after_fit=false", "--trainer.callbacks=[]",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    assert run_cli("fit", "--config", str(CONF / config), "--run_name=r1", *one_batch) == 0
    run = tmp_path / "runs" / config[:-5] / "r1"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "config" not in saved and "${" not in (run / "config.yaml").read_text()
    assert saved["experiment"] == config[:-5] and saved["trainer"]["max_epochs"] == 1
    if config == "rbm_cd25.yaml":  # the overlay on rbm.yaml: its progress-based decay, CD-25
        assert saved["model"]["init_args"]["lr_scheduler"]["class_path"] == "lightning_gm.schedules.LinearProgressLR"
        assert saved["model"]["init_args"]["cd"]["k"] == 25
    else:
        assert saved["model"]["init_args"]["objective"]["train_k"] == 50
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert len(metrics) > 1 and all(math.isfinite(float(v)) for v in metrics[-1].split(",") if v)
    # the run's config.yaml alone (no conf/ include) reproduces the configuration and fits again
    again = resolve(parser, str(run / "config.yaml"))
    assert again["model"] == saved["model"] and again["data"] == saved["data"]
    assert run_cli("fit", "--config", str(run / "config.yaml"), "--run_name=r2") == 0
    assert (tmp_path / "runs" / config[:-5] / "r2" / "checkpoints" / "last.ckpt").is_file()


def test_an_old_run_config_with_flat_keys_is_read_into_the_groups(parser, tmp_path, capsys):
    """A run folder's config.yaml written before the parameter groups (flat ``train_k``, ``test_k``, ``eval_seed``,
    ``chunk_size``) still re-tests its run: the keys are read into their groups, with one line saying which."""
    new = resolve(parser, "iwae.yaml")
    old = {k: v for k, v in new.items() if k not in ("config", "__path__")}
    init = dict(old["model"]["init_args"])
    objective, evaluation = init.pop("objective"), init.pop("evaluation")
    init.update(train_k=objective["train_k"], beta=objective["beta"], test_k=123, val_k=evaluation["val_k"],
                eval_seed=7, chunk_size=500)
    old["model"] = {**old["model"], "init_args": init}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    capsys.readouterr()
    again = resolve(parser, str(path))
    err = capsys.readouterr().err
    assert f"{path} was written before the parameter groups" in err
    assert "test_k as evaluation.test_k" in err and "eval_seed as evaluation.seed" in err and "chunk_size (no" in err
    assert again["model"]["init_args"]["evaluation"] == {**evaluation, "test_k": 123, "seed": 7}
    assert again["model"]["init_args"]["objective"]["train_k"] == 50
    assert again["model"] == {**new["model"], "init_args": {**new["model"]["init_args"],
                                                           "evaluation": {**evaluation, "test_k": 123, "seed": 7}}}
    # a current config says nothing and is read as written
    capsys.readouterr()
    resolve(parser, "iwae.yaml")
    assert "parameter groups" not in capsys.readouterr().err


def test_an_old_rbm_run_config_is_read_into_its_groups(parser, tmp_path, capsys):
    """The RBM's flat keys of before its groups (the hour run's config.yaml had k, num_chains, momentum_warmup_epochs,
    ais_runs): each lands in its group, the rest of the group keeps its default."""
    new = resolve(parser, "rbm_cd25.yaml")
    old = {k: v for k, v in new.items() if k not in ("config", "__path__")}
    init = {k: v for k, v in old["model"]["init_args"].items() if k not in ("cd", "momentum", "ais")}
    init.update(k=25, num_chains=77, momentum_warmup_epochs=2, ais_runs=11)
    old["model"] = {**old["model"], "init_args": init}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    again = resolve(parser, str(path))["model"]["init_args"]
    assert "num_chains as cd.chains" in capsys.readouterr().err
    assert again["cd"] == {"k": 25, "persistent": True, "chains": 77}
    assert again["momentum"]["epochs"] == 2 and again["ais"]["runs"] == 11 and again["ais"]["steps"] == 14500


@pytest.mark.parametrize("config,overrides,epochs", [
    ("dbm.yaml", [], 100 + 200 + 300),
    ("dbm3.yaml", [], 100 + 100 + 200 + 300),  # the overlay's own phases, no sum of its own
    ("dbm.yaml", ["--model.init_args.epochs_per_layer=[5, 10]"], 5 + 10 + 300),
    ("dbn.yaml", [], 60),
    ("conv_dbn.yaml", ["--model.init_args.epochs_per_layer=[2, 3]"], 5),
])
def test_greedy_recipes_compute_their_length(parser, config, overrides, epochs):
    """``trainer.max_epochs: ${sum:${..model.init_args.epochs_per_layer},300}``: the run's length is the sum of the
    phases it names (after the command line), not a hand-copied number."""
    resolved = resolve(parser, config, *overrides)
    assert resolved["trainer"]["max_epochs"] == epochs


def test_the_sum_resolver_names_a_bad_value():
    from lightning_gm.parser import total

    assert total([1, 2], 3, "4") == 10
    with pytest.raises(ValueError, match=r"\$\{sum:...\} adds whole numbers, got 'x'"):
        total([1, "x"])

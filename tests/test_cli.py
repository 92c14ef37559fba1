"""The ``lightning_gm`` command end to end: run folders, training that improves, re-testing, resuming,
config errors, interpolation, shipped configs, W&B offline and a 2-process DDP fit. Help, early errors and the
console are in ``test_command.py``; run-folder history, checkpoints, failed starts and signals in
``test_run_folder.py``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_gm.cli import GenerativeCLI, main
from tests.conftest import ROOT, needs_mnist

DIGITS = str(ROOT / "conf" / "vae_digits.yaml")
FAST = ["--model.init_args.evaluation.test_k=200", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _cli(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def _column(run: Path, key: str) -> list[float]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One short fit of the digits VAE through the CLI, shared by the tests that read its run folder."""
    cwd = tmp_path_factory.mktemp("fit")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = _cli("fit", "--config", DIGITS, "--trainer.max_epochs=6", "--run_name=r1", *FAST)
    finally:
        os.chdir(old)
    assert code == 0
    return cwd / "runs" / "vae_digits" / "r1"


def test_fit_writes_one_complete_run_folder(fitted):
    run = fitted
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch=") for n in ckpts)
    assert (run / "samples" / "samples_epoch=004.png").is_file()
    assert (run / "samples" / "reconstructions_epoch=004.png").is_file()
    assert (run / "samples" / "samples_epoch=005.png").is_file()  # the last epoch is always drawn

    assert not (run / "hparams.yaml").exists()  # config.yaml is the record
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "tested" and summary["estimator"] == "iwae-200"
    assert [(h["command"], h["status"]) for h in summary["history"]] == [("fit", "finished"), ("test", "finished")]
    assert "error" not in summary and summary["tested_checkpoint"] == summary["best_checkpoint"]
    assert summary["family"] == "vae" and summary["data"]["dataset"] == "digits" and summary["epochs"] == 6
    assert summary["experiment"] == "vae_digits" and summary["run_name"] == "r1"
    t = summary["test"]
    # the importance-weighted bound is tighter than the ELBO, and bits/dim follow from the NLL
    assert t["test/nll"] < -t["test/elbo"]
    assert t["test/bpd"] == pytest.approx(t["test/nll"] / (64 * 0.6931471805599453), rel=1e-5)
    saved = (run / "config.yaml").read_text()
    assert "run_name: r1" in saved and "experiment: vae_digits" in saved and "ckpt_path: null" in saved


def test_metrics_rows_carry_their_wall_time(fitted):
    """Every metrics.csv row says when it was logged: the learning curve against wall-clock time."""
    rows = list(csv.DictReader(open(fitted / "metrics.csv")))
    times = [float(r["wall_time"]) for r in rows]
    assert len(times) == len(rows) and times == sorted(times)  # one per row, in the order logged
    summary = json.loads((fitted / "summary.json").read_text())
    fit_time = summary["fit_wall_time_s"]
    assert 0 < times[-1] - times[0] <= fit_time + (summary.get("test_wall_time_s") or 0) + 5


def test_fit_improves_validation_elbo(fitted):
    elbo = _column(fitted, "val/elbo")
    assert len(elbo) == 6
    assert elbo[-1] > elbo[0] + 1.0 and elbo[-1] > max(elbo[:3]), elbo  # nats per example
    best = json.loads((fitted / "summary.json").read_text())["best_score"]
    assert best == pytest.approx(max(elbo), abs=1e-4)


def test_test_subcommand_reevaluates_a_saved_run(fitted, monkeypatch):
    monkeypatch.chdir(fitted.parents[2])
    before = json.loads((fitted / "summary.json").read_text())
    config = (fitted / "config.yaml").read_bytes()
    ckpt = fitted / "checkpoints" / "last.ckpt"
    code = _cli("test", "--config", str(fitted / "config.yaml"), "--ckpt_path", str(ckpt),
                "--model.init_args.evaluation.test_k=2000", "--trainer.enable_progress_bar=false")
    assert code == 0
    after = json.loads((fitted / "summary.json").read_text())
    assert after["estimator"] == "iwae-2000" and after["status"] == "tested"
    assert after["best_score"] == before["best_score"]  # the training record is kept
    # the run's config is left as the fit wrote it; the test's own resolved config is beside it
    assert (fitted / "config.yaml").read_bytes() == config
    (own,) = fitted.glob("test-*.yaml")
    assert "test_k: 2000" in own.read_text() and after["history"][-1]["config"] == own.name
    assert after["history"][-1]["checkpoint"] == str(ckpt) and after["tested_checkpoint"] == str(ckpt)
    # more importance samples: a bound at least as tight, up to Monte Carlo error
    tol = 3 * (before["test"]["test/nll_stderr"] / 10)
    assert after["test"]["test/nll"] <= before["test"]["test/nll"] + tol


def _state(path: Path) -> dict:
    ck = torch.load(path, weights_only=True)
    return {"model": ck["state_dict"], "opt": ck["optimizer_states"][0]["state"], "epoch": ck["epoch"],
            "step": ck["global_step"]}


def test_resume_continues_exactly_like_an_uninterrupted_run(run_cli, tmp_path):
    common = ["--config", DIGITS, "--test_after_fit=false", *FAST]
    assert run_cli("fit", *common, "--trainer.max_epochs=3", "--run_name=straight") == 0
    assert run_cli("fit", *common, "--trainer.max_epochs=1", "--run_name=cut") == 0
    cut = tmp_path / "runs/vae_digits/cut"
    assert run_cli("fit", "--config", str(cut / "config.yaml"), "--trainer.max_epochs=3", "--ckpt_path=last") == 0
    a, b = _state(tmp_path / "runs/vae_digits/straight/checkpoints/last.ckpt"), _state(cut / "checkpoints/last.ckpt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    for i in a["opt"]:
        torch.testing.assert_close(a["opt"][i]["exp_avg"], b["opt"][i]["exp_avg"], rtol=0, atol=1e-6)
    # the resumed run's metrics.csv keeps the epoch before the interruption and matches the straight run
    straight = _column(tmp_path / "runs/vae_digits/straight", "val/elbo")
    resumed = _column(cut, "val/elbo")
    assert len(straight) == len(resumed) == 3
    assert resumed == pytest.approx(straight, abs=1e-5)


def _env() -> dict:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    return env


@pytest.mark.multiprocess
def test_killed_process_resumes_from_last_checkpoint(tmp_path):
    args = [sys.executable, "-m", "lightning_gm", "fit", "--config", DIGITS, "--run_name=k",
            "--trainer.max_epochs=1000", "--test_after_fit=false", "--trainer.enable_progress_bar=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "runs/vae_digits/k/checkpoints/last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not (last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 2):
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    saved = torch.load(last, weights_only=True)  # never half-written
    epoch = saved["epoch"]
    assert epoch >= 2 and saved["global_step"] == (epoch + 1) * 24  # 1197 examples / 50 per batch
    run = tmp_path / "runs/vae_digits/k"
    resume = [sys.executable, "-m", "lightning_gm", "fit", "--config", str(run / "config.yaml"), "--ckpt_path=last",
              f"--trainer.max_epochs={epoch + 3}", "--trainer.enable_progress_bar=false"]
    out = subprocess.run(resume, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "fitted" and summary["epochs"] == epoch + 3
    assert [h["status"] for h in summary["history"]] == ["killed", "finished"]  # the SIGKILLed fit said nothing
    assert summary["global_step"] == (epoch + 3) * 24


@pytest.mark.parametrize(
    "override,expected",
    [
        ("--model.init_args.latnt_dim=3", "Problem with given class_path 'lightning_gm.models.VAE': "
                                          "Option 'latnt_dim' is not accepted"),
        ("--model.init_args.latent_dim=abc", 'Parser key "latent_dim": Expected a <class \'int\'>. Got value: abc'),
        ("--model=lightning_gm.models.Nope", "module 'lightning_gm.models' has no attribute 'Nope'"),
        ("--trainer.max_epoch=3", "trainer.max_epoch is not an option of lightning_gm fit "
                                  "(did you mean trainer.max_epochs?)"),
    ],
)
def test_config_errors_name_the_key(run_cli, capsys, override, expected):
    assert run_cli("fit", "--config", DIGITS, override) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning_gm fit: error: ") and err.count("\n") == 1, err  # one line
    assert expected in err and "vae_digits.yaml" not in err  # the key was on the command line, not in the file
    assert "Traceback" not in err and "Does not validate against any of the Union subtypes" not in err


@pytest.mark.parametrize("content, expected", [
    ("trainer:\n  max_epoch: 2\n", "bad.yaml: trainer.max_epoch is not an option of lightning_gm fit "
                                    "(did you mean trainer.max_epochs?)"),
    ("model:\n  init_args:\n    latnt_dim: 3\n", "bad.yaml: Parser key \"model\": - Problem with given class_path "
                                                 "'lightning_gm.models.VAE': Option 'latnt_dim' is not accepted"),
])
def test_wrong_key_in_a_config_file_names_the_file(run_cli, capsys, tmp_path, content, expected):
    (tmp_path / "bad.yaml").write_text(content)
    assert run_cli("fit", "--config", DIGITS, "--config", str(tmp_path / "bad.yaml")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}/{expected}" in err, err


def test_missing_data_file_is_one_clear_message_and_leaves_nothing(run_cli, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the config's W&B logger would start a run: it must not
    code = run_cli("fit", "--config", str(ROOT / "conf" / "vae.yaml"), f"--data.init_args.data_dir={tmp_path}/nodata",
                   "--data.init_args.download=false")
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("lightning_gm: error:") == 1 and "Traceback" not in err
    assert f"not found at {tmp_path}/nodata/MNIST/raw/train-images-idx3-ubyte.gz and download=False" in err
    assert not (tmp_path / "runs").exists()  # no run folder, no W&B run


def test_interpolation_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "interp.yaml").write_text(
        "model:\n  class_path: lightning_gm.models.VAE\n  init_args:\n    latent_dim: 6\n"
        "    hidden: ['${model.init_args.latent_dim}', 32]\n"
        "data:\n  class_path: lightning_gm.data.DigitsDataModule\n"
    )
    cli = GenerativeCLI(args=["--config", str(tmp_path / "interp.yaml"), "--model.init_args.latent_dim=9",
                              "--trainer.logger=false"], run=False)
    # interpolations resolve when the file is read: the file's latent_dim (6) sized the hidden layer
    assert cli.model.encoder[0].out_features == 6 and cli.model.latent_dim == 9
    assert cli.model.data_shape == (64,)  # linked from the data


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "conf").glob("*.yaml")))
def test_every_shipped_config_instantiates(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = GenerativeCLI(args=["--config", str(ROOT / "conf" / config)], run=False)
    assert cli.model.data_shape == tuple(cli.datamodule.shape)
    assert str(cli.trainer.default_root_dir).startswith(str(Path("runs") / Path(config).stem))
    assert cli.model.num_parameters() > 0


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("1.0", 1.0), ("0.25", 0.25)])
def test_limit_batches_reads_an_integer_as_a_count(value, expected, tmp_path, monkeypatch):
    """Lightning: an int is a number of batches, a float a fraction; ``1`` must not become ``1.0`` (all)."""
    monkeypatch.chdir(tmp_path)
    cli = GenerativeCLI(args=["--config", DIGITS, f"--trainer.limit_test_batches={value}",
                              f"--trainer.limit_train_batches={value}", "--trainer.logger=false"], run=False)
    for limit in (cli.trainer.limit_test_batches, cli.trainer.limit_train_batches):
        assert limit == expected and type(limit) is type(expected)


def test_print_config_round_trips(run_cli, capsys, tmp_path):
    assert run_cli("fit", "--config", DIGITS, "--print_config") == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert "class_path: lightning_gm.models.VAE" in printed and "latent_dim: 8" in printed
    assert run_cli("fit", "--config", str(tmp_path / "printed.yaml"), "--print_config") == 0
    assert capsys.readouterr().out == printed  # the printed config is a complete, valid config


def test_wandb_runs_offline_and_reads_back(run_cli, tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    import wandb

    wandb.teardown()  # forget the "disabled" mode other tests in this process set up
    assert run_cli("fit", "--config", DIGITS, "--trainer.max_epochs=1", "--run_name=w", *FAST) == 0
    offline = list((tmp_path / "runs/vae_digits/w/wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert offline[0].name.endswith(json.loads((tmp_path / "runs/vae_digits/w/summary.json").read_text())["wandb_id"])
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", str(offline[0])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "runs/vae_digits/w/summary.json").read_text())
    shown = {ln.split()[0]: ln.split()[-1] for ln in out.stdout.splitlines() if len(ln.split()) >= 2}
    assert float(shown["test/nll"]) == pytest.approx(summary["test"]["test/nll"], rel=1e-6)
    assert shown["test/estimator"] == "iwae-200" and shown["summary/family"] == "vae"
    # the whole resolved config is the run's config: trainer and data keys too, not only the model's
    config_section = out.stdout.split("\nconfig\n", 1)[1]
    assert "max_epochs" in config_section and "DigitsDataModule" in config_section
    # logged once, nested: no flattened copy of the model's arguments beside the resolved config
    as_json = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(offline[0].parent)],
                             capture_output=True, text=True, timeout=120)
    config = json.loads(as_json.stdout)["config"]
    assert {"model", "trainer", "data"} <= set(config) and not set(config) & {"latent_dim", "hidden", "_class_path"}
    assert config["model"]["init_args"]["latent_dim"] == 8


@pytest.mark.multiprocess
def test_ddp_two_processes_write_one_run(tmp_path):
    args = [sys.executable, "-m", "lightning_gm", "fit", "--config", DIGITS, "--run_name=ddp",
            "--trainer.max_epochs=2", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
            "--model.init_args.evaluation.test_k=100", "--trainer.enable_progress_bar=false"]
    out = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "runs/vae_digits").iterdir())
    assert [r.name for r in runs] == ["ddp"]  # both processes agreed on one folder
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "tested" and summary["epochs"] == 2
    assert summary["global_step"] == 2 * 12  # 1197 examples over 2 processes, 50 per batch: 12 batches each
    assert torch.isfinite(torch.tensor(summary["test"]["test/nll"]))


@needs_mnist
@pytest.mark.slow
def test_vae_one_epoch_full_mnist(run_cli, tmp_path):
    """The README's main job for one epoch on full MNIST, with the real k = 5000 test."""
    assert run_cli("fit", "--config", str(ROOT / "conf" / "vae.yaml"), "--trainer.max_epochs=1", "--run_name=m") == 0
    summary = json.loads((tmp_path / "runs/vae/m/summary.json").read_text())
    assert summary["estimator"] == "iwae-5000" and 80 < summary["test"]["test/nll"] < 130

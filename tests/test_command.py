"""The command's front door: help pages, one-line errors for bad inputs before anything heavy is imported, and
the console of a fresh ``fit`` as a user sees it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from lightning_gm.command import data_choices, main, model_choices
from tests.conftest import ROOT

DIGITS = str(ROOT / "conf" / "vae_digits.yaml")


def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def _run(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lightning_gm COMMAND") and "Lightning Trainer command line tool" not in out
    listed = [ln.split()[0] for ln in out.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()]
    assert listed == ["fit", "validate", "test", "predict", "sweep", "compare"]
    assert main([]) == 0 and capsys.readouterr().out == out


def test_fit_help_leads_with_the_platform_and_lists_every_model_and_data_module(capsys):
    import lightning_gm.data
    import lightning_gm.models
    from lightning_gm.data import GenerativeDataModule
    from lightning_gm.models import GenerativeModel

    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[:20]
    assert first[0].startswith("usage: lightning_gm fit") and any("--experiment" in ln for ln in first)
    assert "--trainer.max_epochs" in out and "accelerator" not in out.split("trainer:")[0]
    # the lists are read from the source files (nothing imported): they must match what the packages export,
    # base classes aside
    from lightning.pytorch import LightningModule

    def exported(package, base, bases):
        return {n for n in package.__all__ if isinstance(getattr(package, n), type)
                and issubclass(getattr(package, n), base)} - bases

    assert {n for n, _ in model_choices()} == exported(lightning_gm.models, LightningModule,
                                                       {GenerativeModel.__name__, "LinearGaussianModel"})
    assert {n for n, _ in data_choices()} == exported(lightning_gm.data, GenerativeDataModule,
                                                      {"GenerativeDataModule", "ImageDataModule"})
    for name, line in model_choices() + data_choices():
        assert f"  {name} " in out and line != "-", name


@pytest.mark.parametrize("write, args, expected", [
    (("broken.yaml", "trainer:\n  max_epochs: [2\nmodel: x\n"), ["fit", "--config", "broken.yaml"],
     "lightning_gm fit: error: config file broken.yaml, line 3, column 6: not valid YAML"),
    (("empty.yaml", ""), ["fit", "--config", "empty.yaml"], "lightning_gm fit: error: config file empty.yaml is empty"),
    (("list.yaml", "- 1\n"), ["test", "--config", "list.yaml"],
     "lightning_gm test: error: config file list.yaml must be a mapping"),
    (None, ["fit", "--config", "nowhere.yaml"], "lightning_gm fit: error: config file nowhere.yaml not found"),
    (("bad.yaml", "trainer:\n  max_epoch: 2\n"), ["fit", "--config", DIGITS, "--config", "bad.yaml"],
     "lightning_gm fit: error: bad.yaml: trainer.max_epoch is not an option of lightning_gm fit "
     "(did you mean trainer.max_epochs?)"),
    (("typo.yaml", "trainr:\n  max_epochs: 2\n"), ["fit", "--config", "typo.yaml"],
     "lightning_gm fit: error: typo.yaml: trainr is not an option of lightning_gm fit (did you mean trainer?)"),
    (None, ["test", "--config", DIGITS, "--ckpt_path", "missing.ckpt"],
     "lightning_gm test: error: --ckpt_path missing.ckpt: no such checkpoint file"),
    (("garbage.ckpt", "not a checkpoint\n"), ["test", "--config", DIGITS, "--ckpt_path", "garbage.ckpt"],
     "lightning_gm test: error: --ckpt_path garbage.ckpt is not a checkpoint"),
    (("garbage.ckpt", "PK\x03\x04 truncated"), ["fit", "--config", DIGITS, "--ckpt_path=garbage.ckpt"],
     "lightning_gm fit: error: --ckpt_path garbage.ckpt is not a checkpoint"),
    (("run.yaml", "ckpt_path: gone.ckpt\n"), ["test", "--config", DIGITS, "--config", "run.yaml"],
     "lightning_gm test: error: ckpt_path in run.yaml: gone.ckpt: no such checkpoint file"),
    (None, ["fitt", "--config", DIGITS], "lightning_gm fitt: error: unknown command 'fitt'"),
])
def test_bad_input_is_one_line_naming_the_file_before_anything_heavy(tmp_path, monkeypatch, capsys, write, args,
                                                                       expected):
    monkeypatch.chdir(tmp_path)
    if write:
        Path(write[0]).write_text(write[1])
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err  # one line
    assert captured.err.startswith(expected), captured.err
    assert "Traceback" not in captured.err and "weights_only" not in captured.err
    assert not (tmp_path / "runs").exists()


def test_help_and_early_errors_import_no_torch_and_answer_at_once(tmp_path):
    """``--help`` and the early errors never import torch, Lightning or W&B (5-7 s here); wall time under a generous
    bound (the target on this 2-core machine is well under 2 s: ~0.1 s measured, README)."""
    (tmp_path / "broken.yaml").write_text("model: [\n")
    probe = ("import sys, time; t = time.time(); from lightning_gm.command import main\n"
             "codes = [main(['--help']), main(['fit', '--help']), main(['compare', '--help']) if False else 0,\n"
             "         main(['fit', '--config', 'broken.yaml']), main(['test', '--config', 'broken.yaml'])]\n"
             "heavy = sorted(m for m in ('torch', 'lightning', 'wandb', 'optuna') if m in sys.modules)\n"
             "print('RESULT', codes, heavy, time.time() - t, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=120)
    result = next(ln for ln in out.stderr.splitlines() if ln.startswith("RESULT"))
    assert result.startswith("RESULT [0, 0, 0, 2, 2] []"), out.stderr[-2000:]
    start = time.time()
    timed = subprocess.run([sys.executable, "-m", "lightning_gm", "--help"], env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert timed.returncode == 0 and time.time() - start < 5.0
    sweep_help = subprocess.run([sys.executable, "-m", "lightning_gm", "sweep", "--help"], env=_env(),
                                capture_output=True, text=True, timeout=120)
    assert sweep_help.returncode == 0 and "--test {none,best,each}" in sweep_help.stdout


def test_a_checkpoint_for_another_model_is_a_failed_start_that_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A checkpoint file that passes the early check but does not load into this model: the command fails after
    the W&B run and the run folder were created, and removes both."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    fast = ["--trainer.max_epochs=1", "--test_after_fit=false", "--trainer.enable_progress_bar=false"]
    assert _run("fit", "--config", DIGITS, "--run_name=a", "--model.init_args.latent_dim=3", *fast) == 0
    ckpt = tmp_path / "runs/vae_digits/a/checkpoints/last.ckpt"
    assert zipfile.is_zipfile(ckpt)
    code = _run("fit", "--config", DIGITS, "--run_name=b", f"--ckpt_path={ckpt}", *fast)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "does not load into this VAE: size mismatch for encoder.4.weight" in err, err
    assert sorted(p.name for p in (tmp_path / "runs/vae_digits").iterdir()) == ["a"]  # b left nothing
    # a test of an existing run with such a checkpoint adds nothing to that run's folder
    run = tmp_path / "runs/vae_digits/a"
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    summary = (run / "summary.json").read_text()
    code = _run("test", "--config", DIGITS, "--run_name=a", "--model.init_args.latent_dim=5", f"--ckpt_path={ckpt}")
    assert code != 0
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    assert (run / "summary.json").read_text() == summary


def test_console_of_a_fresh_fit(tmp_path):
    """What a user sees: the run folder, one line about the model, ``Epoch i/N`` with the model's own metric, the
    test table with the estimator first; none of the other libraries' tips, warnings or ``v_num``."""
    args = [sys.executable, "-m", "lightning_gm", "fit", "--config", DIGITS, "--run_name=c", "--trainer.max_epochs=2",
            "--model.init_args.evaluation.test_k=50"]
    out = subprocess.run(args, cwd=tmp_path, env=_env(WANDB_MODE="offline"), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    console = (out.stdout + out.stderr).replace("\r", "\n")
    assert "lightning_gm fit: run folder runs/vae_digits/c" in console
    assert "VAE (18,256 parameters), on digits (1,197/300/300 train/val/test), on cpu, best checkpoint by val/elbo" \
        in console
    assert "Epoch 1/2" in console and "Epoch 2/2" in console and "val/elbo=" in console
    # not a terminal (a log file): one line per epoch with the model's metric and the epoch's time, no bar redraws
    epochs = [ln for ln in out.stdout.splitlines() if ln.startswith("Epoch ")]
    assert [ln.split(":")[0] for ln in epochs] == ["Epoch 1/2", "Epoch 2/2"], epochs
    assert all("val/elbo=-" in ln and ln.endswith(" s)") for ln in epochs) and "\r" not in out.stdout
    table = out.stdout.split("Test of runs/vae_digits/c (runs/vae_digits/c/checkpoints/best-epoch=001.ckpt):\n")[1]
    rows = [ln.split(None, 1) for ln in table.strip().splitlines()]
    assert rows[0] == ["estimator", "iwae-50"] and rows[1][0] == "test/nll" and rows[1][1].endswith(" nats")
    for noise in ("Tip", "litlogger", "anonymous", "git root", "v_num", "Seed set", "GPU available", "deprecat",
                  "Deprecat", "Trainer already configured", "LightningCLI's args", "Restoring states",
                  "Test metric", "Run history", "Run summary"):
        assert noise not in console, noise
    lines = [ln for ln in console.splitlines() if ln.strip() and not ln.startswith(("Epoch", "Validation", "Sanity",
                                                                                      "Testing", "IWAE", "Training"))]
    assert len(lines) <= 20, lines
    summary = json.loads((tmp_path / "runs/vae_digits/c/summary.json").read_text())
    assert summary["status"] == "tested"


def test_the_progress_display_is_a_bar_on_a_terminal_and_lines_elsewhere():
    from lightning_gm.callbacks.console import EpochLines, EpochProgressBar, progress_callback

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    assert isinstance(progress_callback(Stream(True)), EpochProgressBar)
    assert isinstance(progress_callback(Stream(False)), EpochLines)

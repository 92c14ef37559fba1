"""A run folder stays true: ``last.ckpt`` is the last state and ``best`` the best, later commands only add to the
folder, ``summary.json`` keeps one history without stale errors, the W&B run is shared by fit and test, and SIGINT /
SIGTERM stop a run cleanly with a checkpoint to resume from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from lightning_gm.command import main
from tests.conftest import ROOT

DIGITS = str(ROOT / "conf" / "vae_digits.yaml")
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def _cli(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


class ScriptedModel(pl.LightningModule):
    """A linear model whose validation score is scripted per epoch (lower is better), so that the last epoch can
    be made worse than an earlier one."""

    monitor = "val/score"
    monitor_mode = "min"

    def __init__(self, data_shape: tuple[int, ...] = (64,), scores: list[float] = [3.0, 1.0, 2.0]) -> None:  # noqa: B006
        super().__init__()
        self.scores = list(scores)
        self.layer = torch.nn.Linear(int(torch.tensor(data_shape).prod()), 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.layer(batch[0].flatten(1)) - 1.0).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/score", self.scores[self.current_epoch])

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test/weight_sum", self.layer.weight.sum())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SlowStart(pl.Callback):
    """An evaluation that works in ``on_test_start`` (as AIS computes log Z there)."""

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(0.6)


def test_last_checkpoint_is_the_last_state_after_a_worse_epoch(tmp_path, monkeypatch):
    """Validation scores 3, 1, 2: the best epoch is the second, the last one is worse. ``last.ckpt`` must hold
    the third epoch's weights (Lightning's save_last=True with top-1 would have left it at the second), and the
    test after fit must score the best."""
    monkeypatch.chdir(tmp_path)
    assert _cli("fit", "--model=tests.test_run_folder.ScriptedModel", "--data=lightning_gm.data.DigitsDataModule",
                "--data.init_args.batch_size=50", "--trainer.max_epochs=3", "--run_name=w", "--experiment=scripted",
                *QUIET) == 0
    folder = tmp_path / "runs/scripted/w/checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=001.ckpt", "last.ckpt"]
    best, last = (torch.load(folder / n, weights_only=True) for n in ("best-epoch=001.ckpt", "last.ckpt"))
    assert (best["epoch"], best["global_step"]) == (1, 2 * 24) and (last["epoch"], last["global_step"]) == (2, 3 * 24)
    assert not torch.equal(best["state_dict"]["layer.weight"], last["state_dict"]["layer.weight"])
    summary = json.loads((tmp_path / "runs/scripted/w/summary.json").read_text())
    assert summary["best_score"] == 1.0 and summary["tested_checkpoint"].endswith("best-epoch=001.ckpt")
    assert summary["test"]["test/weight_sum"] == pytest.approx(float(best["state_dict"]["layer.weight"].sum()), rel=1e-6)
    # resuming from "last" continues after the third epoch, not from the best one
    assert _cli("fit", "--config", str(tmp_path / "runs/scripted/w/config.yaml"), "--ckpt_path=last",
                "--model.init_args.scores=[3.0, 1.0, 2.0, 0.5]", "--trainer.max_epochs=4", "--test_after_fit=false") == 0
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (3, 4 * 24)
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=003.ckpt", "last.ckpt"]


def test_last_checkpoint_is_written_in_epochs_without_validation(tmp_path, monkeypatch):
    """``check_val_every_n_epoch: 5`` (conf/flow_toy.yaml) with a 2-epoch run: no validation ever runs, and
    ``last.ckpt`` still holds the second epoch (Lightning's default would have waited for epoch 5: nothing saved)."""
    monkeypatch.chdir(tmp_path)
    assert _cli("fit", "--config", str(ROOT / "conf" / "flow_toy.yaml"), "--trainer.max_epochs=2",
                "--trainer.limit_train_batches=3", "--trainer.callbacks=[]", "--run_name=r", "--test_after_fit=false",
                *QUIET) == 0
    last = torch.load(tmp_path / "runs/flow_toy/r/checkpoints/last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 6)


def test_fit_into_a_trained_run_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--config", DIGITS, "--run_name=r", "--trainer.max_epochs=1", "--test_after_fit=false", *QUIET]
    assert _cli("fit", *common) == 0
    before = (tmp_path / "runs/vae_digits/r/checkpoints/last.ckpt").read_bytes()
    capsys.readouterr()
    assert _cli("fit", *common) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs/vae_digits/r already holds a trained run: resume it with " \
        "`lightning_gm fit --config runs/vae_digits/r/config.yaml --ckpt_path last`" in err
    assert (tmp_path / "runs/vae_digits/r/checkpoints/last.ckpt").read_bytes() == before


def test_nothing_to_resume_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _cli("fit", "--config", DIGITS, "--run_name=new", "--ckpt_path=last", *QUIET) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ckpt_path last: runs/vae_digits/new/checkpoints/last.ckpt does not exist" in err
    assert "save_last" not in err and not (tmp_path / "runs").exists()


def test_test_time_includes_evaluations_at_test_start(tmp_path, monkeypatch):
    """``test_wall_time_s`` counts from before the first ``on_test_start`` (AIS computes log Z there)."""
    monkeypatch.chdir(tmp_path)
    assert _cli("fit", "--config", DIGITS, "--run_name=t", "--trainer.max_epochs=1", "--model.init_args.evaluation.test_k=10",
                "--trainer.callbacks+=tests.test_run_folder.SlowStart", *QUIET) == 0
    summary = json.loads((tmp_path / "runs/vae_digits/t/summary.json").read_text())
    assert summary["test_wall_time_s"] >= 0.6


def test_one_epoch_rbm_has_its_pictures(tmp_path, monkeypatch):
    """Pictures every 5 epochs: a 1-epoch run still gets the last epoch's samples and filters."""
    monkeypatch.chdir(tmp_path)
    assert _cli("fit", "--model=lightning_gm.models.RBM", "--model.init_args.n_hidden=12",
                "--model.init_args.cd.chains=20", "--model.init_args.sample_steps=10",
                "--model.init_args.ais.exact_max_units=12", "--data=lightning_gm.data.DigitsDataModule",
                "--data.init_args.binarize=static", "--data.init_args.batch_size=100", "--trainer.max_epochs=1",
                "--trainer.callbacks+=lightning_gm.callbacks.RBMPictures", "--trainer.callbacks.every_n_epochs=5",
                "--run_name=p", "--experiment=rbm", *QUIET) == 0
    names = sorted(p.name for p in (tmp_path / "runs/rbm/p/samples").iterdir())
    assert {"samples_epoch=000.png", "filters_epoch=000.png", "fantasy_epoch=000.png"} <= set(names), names


# ------------------------------------------------------------------------------------ several processes
def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lightning_gm", *args]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}


def _wait_for(predicate, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except (json.JSONDecodeError, KeyError, IndexError):
            pass
        time.sleep(0.3)
    raise AssertionError("timed out")


def _stop(proc: subprocess.Popen, sig: int) -> tuple[int, str, float]:
    start = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, time.time() - start


def _wandb_summary(folder: Path) -> dict:
    out = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--summary", "--json",
                          str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.multiprocess
def test_later_commands_only_add_to_the_run_folder(tmp_path):
    """fit, a limited test, a re-test stopped by Ctrl-C, a full test, then a resume: config.yaml stays the fit's (and
    resumes), each test writes its own config beside it, the status is never made `interrupted` by the stopped
    re-test and keeps no stale error, and every command continues the one W&B run of the folder."""
    env = _env(WANDB_MODE="offline")
    run = tmp_path / "runs/vae_digits/h"
    ok = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    fit = subprocess.run(_command("fit", "--config", DIGITS, "--run_name=h", "--trainer.max_epochs=2",
                                  "--model.init_args.evaluation.test_k=20", "--trainer.enable_progress_bar=false"), **ok)
    assert fit.returncode == 0, fit.stderr[-3000:]
    config = (run / "config.yaml").read_bytes()
    full = _summary(run)["test"]
    # a one-off limited test: its own config file, the run's config untouched
    limited = subprocess.run(_command("test", "--config", str(run / "config.yaml"), "--trainer.limit_test_batches=1",
                                      "--model.init_args.evaluation.test_k=20", "--trainer.enable_progress_bar=false"), **ok)
    assert limited.returncode == 0, limited.stderr[-3000:]
    assert (run / "config.yaml").read_bytes() == config
    (own,) = run.glob("test-*.yaml")
    assert "limit_test_batches: 1" in own.read_text() and b"limit_test_batches: null" in config
    assert _summary(run)["test"]["test/iwae_examples"] == 300  # one batch of 300: the whole digits test set
    time.sleep(1.1)  # the next test's config gets another name (seconds in it)
    # a long re-test stopped by Ctrl-C: the run stays `tested`, with no error, and keeps its test numbers
    before = _summary(run)
    proc = subprocess.Popen(_command("test", "--config", str(run / "config.yaml"), "--model.init_args.evaluation.test_k=200000",
                                     "--trainer.enable_progress_bar=false"), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _summary(run)["history"][-1]["status"] == "running" and len(_summary(run)["history"]) == 4)
    time.sleep(1.0)
    code, err, took = _stop(proc, signal.SIGINT)
    assert code == 130 and took < 30, err[-2000:]
    assert "test stopped by SIGINT; the run's status and earlier results" in err
    after = _summary(run)
    assert after["status"] == "tested" and "error" not in after and "signal" not in after
    assert after["test"] == before["test"]
    last = after["history"][-1]
    assert (last["command"], last["status"], last["signal"]) == ("test", "interrupted", "SIGINT")
    # a full test succeeds: still no stale error, in summary.json or in W&B
    again = subprocess.run(_command("test", "--config", str(run / "config.yaml"), "--model.init_args.evaluation.test_k=20",
                                    "--trainer.enable_progress_bar=false"), **ok)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _summary(run)
    assert after["status"] == "tested" and "error" not in after
    assert after["test"]["test/nll"] == pytest.approx(full["test/nll"], rel=1e-6)  # same checkpoint, same test
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 4 and {p.name.rsplit("-", 1)[1] for p in wandb_runs} == {after["wandb_id"]}
    latest = _wandb_summary(run / "wandb")
    assert latest["run_id"] == after["wandb_id"]
    assert latest["summary"]["summary/status"] == "tested" and latest["summary"]["summary/error"] == ""
    assert latest["summary"]["test/nll"] == pytest.approx(after["test"]["test/nll"], rel=1e-6)
    assert latest["summary"]["summary/epochs"] == 2  # the fit's record lives in the same run
    # the README's resume command works with the run's config.yaml, and the resumed fit tests the full set again
    resume = subprocess.run(_command("fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last",
                                     "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false"), **ok)
    assert resume.returncode == 0, resume.stderr[-3000:]
    final = _summary(run)
    assert final["status"] == "tested" and final["epochs"] == 3 and final["test"]["test/iwae_examples"] == 300
    assert [(h["command"], h["status"]) for h in final["history"]] == [
        ("fit", "finished"), ("test", "finished"), ("test", "finished"), ("test", "interrupted"), ("test", "finished"),
        ("fit", "finished"), ("test", "finished")]
    assert len(list(run.glob("test-*.yaml"))) == 3


@pytest.mark.multiprocess
def test_ctrl_c_in_the_first_epoch_leaves_a_checkpoint_to_resume(tmp_path):
    """Ctrl-C in epoch 1 (mid-epoch): exit 130 within seconds, last.ckpt holds the state at that step, the status
    says SIGINT, the message gives the resume command (not Lightning's advice to set save_last); resuming finishes
    the epoch."""
    env = _env(WANDB_MODE="disabled")
    run = tmp_path / "runs/vae_digits/c"
    # wider layers make the 599 steps of the first epoch last several seconds even on an idle machine
    args = ["--data.init_args.batch_size=2", "--model.init_args.hidden=[1024, 1024]",
            "--trainer.enable_progress_bar=false", "--test_after_fit=false"]
    proc = subprocess.Popen(_command("fit", "--config", DIGITS, "--run_name=c", "--trainer.max_epochs=3", *args),
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _summary(run)["status"] == "running")
    time.sleep(1.5)  # 599 steps of 2 examples per epoch: well inside the first epoch
    code, err, took = _stop(proc, signal.SIGINT)
    assert code == 130 and took < 20, err[-2000:]
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    step = saved["global_step"]
    assert saved["epoch"] == 0 and 0 < step < 599
    summary = _summary(run)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGINT"
    assert summary["error"] == f"stopped by SIGINT in epoch 1 of 3 (step {step})"
    assert summary["last_checkpoint"] == "runs/vae_digits/c/checkpoints/last.ckpt"
    lines = [ln for ln in err.splitlines() if ln.startswith("lightning_gm")]
    assert lines == [f"lightning_gm fit: stopped by SIGINT in epoch 1 of 3 (step {step}); {run.relative_to(tmp_path)}"
                     f"/checkpoints/last.ckpt holds the last state. Resume with: lightning_gm fit --config "
                     f"{run.relative_to(tmp_path)}/config.yaml --ckpt_path last"]
    assert "save_last" not in err and "Traceback" not in err
    resume = subprocess.run(_command("fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last",
                                     "--trainer.max_epochs=1"), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert resume.returncode == 0, resume.stderr[-3000:]
    summary = _summary(run)
    assert summary["status"] == "fitted" and "error" not in summary and summary["global_step"] == 599
    assert [h["status"] for h in summary["history"]] == ["interrupted", "finished"]


@pytest.mark.multiprocess
def test_sigterm_stops_training_within_seconds(tmp_path):
    env = _env(WANDB_MODE="offline")
    run = tmp_path / "runs/vae_digits/s"
    proc = subprocess.Popen(_command("fit", "--config", DIGITS, "--run_name=s", "--trainer.max_epochs=1000",
                                     "--trainer.enable_progress_bar=false"), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / "checkpoints/last.ckpt").is_file() and _summary(run)["status"] == "running")
    code, err, took = _stop(proc, signal.SIGTERM)
    assert code == 143 and took < 20, err[-2000:]
    summary = _summary(run)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert summary["error"].startswith("stopped by SIGTERM in epoch ") and f"(step {saved['global_step']})" in \
        summary["error"]
    assert "test" not in summary  # an interrupted fit is not tested
    wandb = _wandb_summary(run / "wandb")
    assert wandb["summary"]["summary/status"] == "interrupted" and wandb["summary"]["summary/signal"] == "SIGTERM"

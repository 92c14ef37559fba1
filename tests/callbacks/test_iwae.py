"""The IWAE test evaluation through the command: a 2-process DDP test gives the single-process numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

DIGITS = str(ROOT / "conf" / "vae_digits.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def _run(args: list[str], cwd, subprocess_: bool = True) -> None:
    if not subprocess_:  # in-process: no interpreter start-up
        from lightning_gm.cli import main

        old = os.getcwd()
        os.chdir(cwd)
        try:
            assert main(args) == 0
        finally:
            os.chdir(old)
        return
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "lightning_gm", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on 2 shared cores: one thread is much faster
    cwd = tmp_path_factory.mktemp("iwae")
    _run(["fit", "--config", DIGITS, "--run_name=fit", "--trainer.max_epochs=2", "--test_after_fit=false", *QUIET], cwd, False)
    yield cwd, cwd / "runs/vae_digits/fit/checkpoints/last.ckpt"
    torch.set_num_threads(old)


def _test(cwd, ckpt, name: str, *extra: str) -> dict:
    ddp = "--trainer.strategy=ddp" in extra
    _run(["test", "--config", DIGITS, f"--ckpt_path={ckpt}", f"--run_name={name}", "--model.init_args.evaluation.test_k=64",
          *QUIET, *extra], cwd, ddp)
    return json.loads((cwd / f"runs/vae_digits/{name}/summary.json").read_text())


@pytest.mark.multiprocess
def test_two_process_evaluation_equals_one_process(checkpoint):
    cwd, ckpt = checkpoint
    one = _test(cwd, ckpt, "one")
    two = _test(cwd, ckpt, "two", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu")
    assert one["estimator"] == two["estimator"] == "iwae-64"
    for key in ("test/nll", "test/nll_stderr", "test/iw_elbo", "test/bpd", "test/active_units"):
        assert two["test"][key] == one["test"][key], key  # same per-example noise, same numbers
    t = one["test"]
    assert t["test/nll"] <= -t["test/iw_elbo"] and 0 < t["test/active_units"] <= 8
    # another evaluation seed: other noise, a different (but close) estimate
    other = _test(cwd, ckpt, "seed", "--model.init_args.evaluation.seed=1")
    assert other["test"]["test/nll"] != t["test/nll"]
    assert abs(other["test"]["test/nll"] - t["test/nll"]) < 5 * t["test/nll_stderr"]


def test_a_limited_test_evaluates_the_examples_its_loop_covers(checkpoint):
    """``limit_test_batches`` limits the IWAE evaluation to the examples the test loop sees (the first ones):
    2 batches of 50 and 1 batch of 100 are the same 100 examples with the same per-example noise."""
    cwd, ckpt = checkpoint
    two = _test(cwd, ckpt, "lim2x50", "--trainer.limit_test_batches=2", "--data.init_args.eval_batch_size=50")
    one = _test(cwd, ckpt, "lim1x100", "--trainer.limit_test_batches=1", "--data.init_args.eval_batch_size=100")
    three = _test(cwd, ckpt, "lim3x50", "--trainer.limit_test_batches=3", "--data.init_args.eval_batch_size=50")
    assert two["test"]["test/iwae_examples"] == one["test"]["test/iwae_examples"] == 100
    assert three["test"]["test/iwae_examples"] == 150
    assert two["test"]["test/nll"] == one["test"]["test/nll"]
    assert three["test"]["test/nll"] != one["test"]["test/nll"]


def test_the_label_says_what_a_reduced_test_computed(checkpoint):
    """A prefix (limit_test_batches) and an evenly spaced subset are named in the estimator label that summary.json
    (and W&B) carry; the loader's batch size changes no number."""
    cwd, ckpt = checkpoint
    total = _test(cwd, ckpt, "full")["test"]["test/iwae_examples"]
    first = _test(cwd, ckpt, "first", "--trainer.limit_test_batches=1", "--data.init_args.eval_batch_size=100")
    assert first["estimator"] == f"iwae-64 (first 100 of {int(total):,})"
    spaced = _test(cwd, ckpt, "spaced", "--model.init_args.evaluation.subset=50")
    assert spaced["estimator"] == f"iwae-64 (50 of {int(total):,}, evenly spaced)"
    assert spaced["test"]["test/iwae_examples"] == 50
    again = _test(cwd, ckpt, "spaced_b7", "--model.init_args.evaluation.subset=50", "--data.init_args.eval_batch_size=7")
    for key in ("test/nll", "test/nll_stderr", "test/iw_elbo", "test/active_units"):
        assert again["test"][key] == spaced["test"][key], key


@pytest.mark.multiprocess
def test_sigterm_stops_the_evaluation_within_seconds(checkpoint):
    """A SIGTERM while the IWAE evaluation runs (an evaluation of minutes: k = 2,000,000) stops it within seconds,
    through the progress hook: the run is recorded as interrupted (summary.json written at the stop), with no
    test/nll, and the process ends. (The interpreter's own exit can take seconds more on a loaded machine.)"""
    import select
    import signal
    import time

    cwd, ckpt = checkpoint
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = ["test", "--config", DIGITS, f"--ckpt_path={ckpt}", "--run_name=term", "--trainer.logger=false",
            "--model.init_args.evaluation.test_k=2000000", "--trainer.enable_progress_bar=true"]
    proc = subprocess.Popen([sys.executable, "-m", "lightning_gm", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 300
    try:
        while b"IWAE k=2000000" not in seen and time.time() < deadline and proc.poll() is None:
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += os.read(proc.stderr.fileno(), 65536)
        assert b"IWAE k=2000000" in seen, seen[-2000:]
        time.sleep(2.0)  # well inside the evaluation
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    path = cwd / "runs/vae_digits/term/summary.json"
    assert path.stat().st_mtime - sent < 5.0  # the evaluation stopped and the run was recorded within seconds
    summary = json.loads(path.read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]
    assert "test/nll" not in summary.get("test", {})

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

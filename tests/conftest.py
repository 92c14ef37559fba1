"""Shared test set-up: the data root, offline W&B, and a helper that runs the ``lightning_gm`` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests and CI read the datasets from ../shared/data unless LIGHTNING_GM_DATA already points elsewhere.
if "LIGHTNING_GM_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["LIGHTNING_GM_DATA"] = str(SHARED_DATA)
# W&B never reaches a server from the tests; most tests do not need a W&B run at all.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# The suite's models are small and several processes run at once (DDP tests, sweep workers) on a
# 2-core machine: one thread each avoids oversubscription, which slows small matmuls 100-fold.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# Lightning's log handler writes to the sys.stderr of the moment it is imported: import it now, not inside a test
# whose captured stream is closed afterwards (later tests' messages would then fail to print).
import lightning.pytorch  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _one_multiprocess_test_at_a_time(request, tmp_path_factory):
    """Under pytest-xdist (the default run, ``-n auto`` in pyproject.toml), the tests that start processes of
    their own (marked ``multiprocess``: sweeps, 2-process DDP, signals, resume) hold a lock shared by the run's
    workers, so at most one of them runs at a time while the other worker takes in-process tests: two at once would
    put four or more busy processes on the two cores and push their deadlines (a SIGTERM answered within 30 s, a
    checkpoint written within 120 s) over. xdist's own ``--dist loadgroup`` cannot do this under pytest 9.2 (its
    groups are silently ignored: pytest-dev/pytest-xdist#1386). Without xdist nothing is locked."""
    if request.node.get_closest_marker("multiprocess") is None or "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    import fcntl

    # the workers' base temporary folders share this run's parent folder (another pytest run has its own)
    with open(tmp_path_factory.getbasetemp().parent / "multiprocess.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test runs with ``OMP_NUM_THREADS`` intra-op threads (1 unless set): the suite's tensors are
    small, and on a loaded 2-core machine extra BLAS threads wait on descheduled workers (1000x slowdowns
    were seen). Restored afterwards, so a test that changes it cannot leak the change."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _no_inherited_wandb_service():
    """A test that uses W&B in-process leaves its service's address in ``WANDB_SERVICE``; a later test's
    ``lightning_gm`` subprocess would attach to that service (gone, or serving another run) and write no run log."""
    os.environ.pop("WANDB_SERVICE", None)
    yield


def has_mnist() -> bool:
    root = Path(os.environ.get("LIGHTNING_GM_DATA", ""))
    return (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()


needs_mnist = pytest.mark.skipif(not has_mnist(), reason="MNIST files not found under $LIGHTNING_GM_DATA")


def write_fit_config(path: Path, model: dict, data: dict, max_epochs: int = 1) -> Path:
    """Write a ``lightning_gm fit`` config for a seconds-long command test to ``path`` (its stem names the
    experiment): the given ``model`` and ``data`` blocks (``class_path`` + ``init_args``), ``max_epochs``, a CSV
    logger in ``runs/``, the sample pictures, no progress bar or model summary."""
    import yaml

    trainer = {
        "max_epochs": max_epochs,
        "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}],
        "callbacks": [{"class_path": "lightning_gm.callbacks.SamplePictures"}],
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    path.write_text(yaml.safe_dump({"trainer": trainer, "model": model, "data": data}, sort_keys=False))
    return path


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Run ``lightning_gm <args>`` in-process inside ``tmp_path``; returns (exit code, run folder finder)."""
    from lightning_gm.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> int:
        try:
            return main(list(args))
        except SystemExit as exc:  # jsonargparse exits on bad configs
            return int(exc.code or 0)

    return run

"""``lightning_gm sweep``: search-space validation, a real study with pruning and a failing trial (a line per
trial, trials in the study's folder, the best trial tested, the optimised value in each trial's summary), the best
config reproducing its trial, two workers sharing a PostgreSQL study, a killed worker's trial retried by a living
one, and a worker stopped by SIGTERM that stops its trial cleanly and queues it again."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from lightning_gm.errors import ConfigError
from lightning_gm.sweep import load_sweep
from tests.conftest import ROOT

DIGITS = str(ROOT / "conf" / "vae_digits.yaml")


def _sweep_file(tmp_path: Path, **fields) -> Path:
    spec = {
        "base_config": DIGITS, "study_name": "s", "metric": "val/elbo", "direction": "maximize", "n_trials": 2,
        "overrides": {"trainer.max_epochs": 2, "model.init_args.evaluation.test_k": 10},
        "space": {"model.init_args.latent_dim": {"type": "int", "low": 2, "high": 8}},
        "test": "none",
    }
    spec.update(fields)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "space,message",
    [
        ({"model.init_args.latnt_dim": {"type": "int", "low": 2, "high": 8}},
         "space key 'model.init_args.latnt_dim' is not a key of the base config"),
        ({"model.init_args.activation": {"type": "categorical", "choices": []}},
         "space.model.init_args.activation is categorical but its 'choices' list is empty"),
        ({"model.init_args.latent_dim": {"type": "int", "low": 9, "high": 3}},
         "space.model.init_args.latent_dim has low > high (9 > 3)"),
        ({"model.init_args.beta": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
         "is log-scaled so 'low' must be > 0"),
        ({"model.init_args.beta": {"type": "uniform", "low": 0.0, "high": 1.0}},
         "space.model.init_args.beta.type must be one of ['float', 'int', 'categorical']"),
        ({"model.init_args.beta": {"type": "float", "low": 0.1, "high": 1.0, "when": {"model.init_args.nope": 1}}},
         "space.model.init_args.beta.when refers to unknown config key 'model.init_args.nope'"),
    ],
)
def test_bad_space_is_a_clear_error(tmp_path, space, message):
    with pytest.raises(ConfigError) as info:
        load_sweep(_sweep_file(tmp_path, space=space))
    assert message in str(info.value) and str(tmp_path / "sweep.yaml") in str(info.value)


def test_space_parsing_and_other_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default storage's folder is made below the working directory, not the repo
    spec = load_sweep(_sweep_file(tmp_path, space={
        "model.init_args.optimizer.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.init_args.activation": {"type": "categorical", "choices": ["tanh", "relu"]},
        "model.init_args.latent_dim": {"type": "int", "low": 2, "high": 8, "when": {"model.init_args.activation": "relu"}},
    }))
    assert [p.key.rsplit(".", 1)[-1] for p in spec.space] == ["lr", "activation", "latent_dim"]
    assert spec.space[0].log and spec.space[2].when == {"model.init_args.activation": "relu"}
    assert spec.storage_url.endswith("runs/sweeps/s.db") and spec.direction == "maximize"
    with pytest.raises(ConfigError, match="sampler.name must be one of"):
        load_sweep(_sweep_file(tmp_path, sampler={"name": "grid"}))
    with pytest.raises(ConfigError, match="base_config 'conf/nope.yaml' not found"):
        load_sweep(_sweep_file(tmp_path, base_config="conf/nope.yaml"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['trials'\]"):
        load_sweep(_sweep_file(tmp_path, trials=3))


def _env() -> dict:
    return dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT))


def _sweep(tmp_path: Path, sweep: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_gm", "sweep", "--config", str(sweep), *extra],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900, **kw)


def _best_val_elbo(run: Path) -> float:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return max(float(r["val/elbo"]) for r in rows if r.get("val/elbo"))


@pytest.mark.multiprocess
def test_study_prunes_survives_a_failing_trial_and_writes_a_reproducible_best_config(tmp_path):
    lr, act = "model.init_args.optimizer.init_args.lr", "model.init_args.activation"
    sweep = _sweep_file(
        tmp_path, n_trials=5, sampler={"name": "tpe", "seed": 0}, test="best",
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        overrides={"trainer.max_epochs": 3},
        space={
            lr: {"type": "float", "low": 1.0e-7, "high": 1.0e-2, "log": True},
            act: {"type": "categorical", "choices": ["tanh", "nope"]},
        },
        # two good points, then one whose learning rate cannot beat their median (pruned after its first
        # epoch), then one that cannot be built (failed); the fifth is the sampler's
        enqueue=[{lr: 0.003, act: "tanh"}, {lr: 0.002, act: "tanh"}, {lr: 1.0e-7, act: "tanh"}, {act: "nope"}],
    )
    out = _sweep(tmp_path, sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs/sweeps/s/study.json").read_text())
    trials = summary["trials"]
    assert sum(trials.values()) == 5  # the whole budget ran: a failure did not stop the study
    import optuna

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/runs/sweeps/s.db")
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[0] == states[1] == "COMPLETE" and states[2] == "PRUNED" and states[3] == "FAIL", states
    assert study.trials[2].intermediate_values.keys() == {0}  # stopped after its first epoch
    assert "activation must be one of" in summary["failed"]["3"] and "got 'nope'" in summary["failed"]["3"]
    assert summary["best_value"] == max(t.value for t in study.get_trials() if t.state.name == "COMPLETE")
    for name in ("history.png", "importance.png", "best.yaml"):
        assert (tmp_path / "runs/sweeps/s" / name).is_file()
    # a line per trial as it ended: its state, value and time
    ended = {int(m.group(1)): m.group(2) for m in
             re.finditer(r"^\[sweep s\] trial (\d+) (COMPLETE|PRUNED|FAIL)\b.* in \d+s", out.stdout, re.M)}
    assert ended == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "FAIL", 4: states[4]}, out.stdout
    assert re.search(r"^\[sweep s\] trial 2 PRUNED at epoch 1 \(val/elbo = -?[\d.]+\) in \d+s$", out.stdout, re.M)
    # each trial has its own run folder in the study's folder, tagged with the study and its number, and holding
    # the value the study optimised (the leaderboard's column)
    assert summary["best_run_dir"] == f"runs/sweeps/s/trial-{summary['best_trial']:04d}"
    trial_summary = json.loads((Path(tmp_path) / summary["best_run_dir"] / "summary.json").read_text())
    assert trial_summary["tags"] == ["sweep:s", f"trial:{summary['best_trial']}"]
    assert trial_summary["sweep"] == {"study": "s", "trial": summary["best_trial"], "metric": "val/elbo",
                                      "direction": "maximize", "value": summary["best_value"], "state": "COMPLETE"}
    assert not (tmp_path / "runs/vae_digits").exists()  # nothing mixed with plain fits of the base config
    # the best trial was tested at the end, into its own run folder
    assert trial_summary["status"] == "tested" and trial_summary["estimator"] == "iwae-1000"
    assert summary["best_test"]["test/nll"] == trial_summary["test"]["test/nll"]
    assert re.search(rf"^\[sweep s\] trial {summary['best_trial']}: test/nll = [\d.]+ ± [\d.]+ \(iwae-1000\)",
                     out.stdout, re.M)
    # the best config reproduces the best trial
    rerun = subprocess.run([sys.executable, "-m", "lightning_gm", "fit", "--config", "runs/sweeps/s/best.yaml",
                            "--run_name=again", "--test_after_fit=false"], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _best_val_elbo(tmp_path / "runs/s_best/again") == pytest.approx(summary["best_value"], abs=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    """A throw-away PostgreSQL server on loopback (Debian's postgresql package), run as user postgres."""
    bindir = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path(
        "/usr/lib/postgresql").is_dir() else None
    if bindir is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg")
    data = Path(tempfile.mkdtemp(prefix="lightning_gm-pg-"))  # outside pytest's root-only tmp tree
    shutil.chown(data, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run(as_pg + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                            f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        subprocess.run(as_pg + [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "optuna"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.multiprocess
def test_two_workers_share_one_postgres_study(tmp_path, postgres):
    import optuna

    sweep = _sweep_file(tmp_path, n_trials=4, pruner={"name": "none"})
    workers = [subprocess.Popen([sys.executable, "-m", "lightning_gm", "sweep", "--config", str(sweep),
                                 "--storage", postgres], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [w.communicate(timeout=900)[0] for w in workers]
    study = optuna.load_study(study_name="s", storage=postgres)
    trials = study.get_trials()
    states = {t.number: (t.state.name, t.user_attrs.get("fail_reason")) for t in trials}
    if [w.returncode for w in workers] != [0, 0] or any(s != "COMPLETE" for s, _ in states.values()):
        pytest.fail(f"trials {states}\n" + "\n".join(  # the whole logs (an assertion's repr would cut them)
            f"--- worker {i}, exit {w.returncode}:\n{log}" for i, (w, log) in enumerate(zip(workers, logs))),
            pytrace=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # no trial lost, none run twice, no extra
    done = re.compile(r"^\[sweep s\] trial (\d+) COMPLETE val/elbo = ")
    ran = [sorted(int(m.group(1)) for m in map(done.match, log.splitlines()) if m) for log in logs]
    assert sorted(ran[0] + ran[1]) == [0, 1, 2, 3] and ran[0] and ran[1], ran  # both workers ran trials
    dirs = sorted(p.name for p in (tmp_path / "runs/sweeps/s").iterdir() if p.is_dir())
    assert dirs == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]


@pytest.mark.multiprocess
def test_killed_worker_trial_is_failed_and_retried(tmp_path):
    import optuna

    sweep = _sweep_file(tmp_path, n_trials=2, pruner={"name": "none"}, heartbeat_interval=1, grace_period=4,
                        overrides={"trainer.max_epochs": 30})
    first = subprocess.Popen([sys.executable, "-m", "lightning_gm", "sweep", "--config", str(sweep)], cwd=tmp_path,
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "runs/sweeps/s/trial-0000/metrics.csv"
    deadline = time.time() + 180
    while time.time() < deadline and not ckpt.is_file():
        time.sleep(0.5)
    assert ckpt.is_file()
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its trial die together, as with a lost machine
    first.wait()
    fast = _sweep_file(tmp_path, n_trials=2, pruner={"name": "none"}, heartbeat_interval=1, grace_period=4,
                       overrides={"trainer.max_epochs": 2})
    out = _sweep(tmp_path, fast)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/runs/sweeps/s.db")
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[0].state == optuna.trial.TrialState.FAIL  # marked failed by the living worker
    retried = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == by_number[0].params  # the same point of the space, run again
    assert by_number[1].state == optuna.trial.TrialState.COMPLETE and len(by_number) == 3


@pytest.mark.multiprocess
def test_sigterm_stops_a_sweep_and_its_trial_cleanly(tmp_path):
    """SIGTERM to the worker: its running trial is stopped the same way (last.ckpt, status SIGTERM), marked failed
    with the signal as its reason and queued again with the same parameters, the report is written, and the worker
    exits 143 within seconds."""
    import optuna

    sweep = _sweep_file(tmp_path, n_trials=2, pruner={"name": "none"}, overrides={"trainer.max_epochs": 500})
    worker = subprocess.Popen([sys.executable, "-m", "lightning_gm", "sweep", "--config", str(sweep)], cwd=tmp_path,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial = tmp_path / "runs/sweeps/s/trial-0000"
    deadline = time.time() + 240
    while time.time() < deadline and not (trial / "checkpoints/last.ckpt").is_file():
        time.sleep(0.5)
    assert (trial / "checkpoints/last.ckpt").is_file()
    start = time.time()
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 143 and time.time() - start < 30, err[-3000:]
    assert re.search(r"^\[sweep s\] trial 0 FAIL in \d+s: interrupted by SIGTERM \(queued again", out, re.M), out
    assert "[sweep s] stopped by SIGTERM; the same command continues the study" in out
    trial_summary = json.loads((trial / "summary.json").read_text())
    assert trial_summary["status"] == "interrupted" and trial_summary["signal"] == "SIGTERM"
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/runs/sweeps/s.db")
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["fail_reason"] == "interrupted by SIGTERM"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state.name == "WAITING"
    assert retry[0].system_attrs["fixed_params"] == trials[0].params  # the same point, run again
    assert json.loads((tmp_path / "runs/sweeps/s/study.json").read_text())["trials"] == {"fail": 1, "waiting": 2}


def test_two_processes_writing_one_file_at_once_both_succeed(tmp_path):
    """Two sweep workers that finish together both write study.json: each writes its own temporary file and renames
    it over the target, so both succeed and the file is one of the two, whole (a shared temporary name made the
    second rename fail: the flaky exit 1 of test_two_workers_share_one_postgres_study)."""
    script = ("import sys; from lightning_gm.atomic import write_text_atomic\n"
              "for i in range(300): write_text_atomic(sys.argv[1], sys.argv[2] * 20000)\n")
    target = tmp_path / "study.json"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(target), c]) for c in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert target.read_text() in ("a" * 20000, "b" * 20000)
    assert [p.name for p in tmp_path.iterdir()] == ["study.json"]  # no temporary file left

"""Running a study: its storage (shared by workers), the trial queue and heartbeat, one trial as a
``lightning_gm fit`` process, the tests of the best (or each) trial, and the worker loop :func:`run_sweep`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from lightning_gm.errors import ConfigError
from lightning_gm.sweep.report import report, write_study_json
from lightning_gm.sweep.spec import (
    ENQUEUED_ATTR,
    Param,
    SweepSpec,
    flatten,
    make_pruner,
    make_sampler,
    resolved_base_config,
)

__all__ = ["open_study", "run_trial", "test_trial", "run_sweep"]


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _override(key: str, value: Any) -> str:
    # `model.class_path` is chosen as `--model=<class path>`
    if key.endswith(".class_path"):
        key = key[: -len(".class_path")]
    return f"--{key}={_format(value)}"


def _storage(spec: SweepSpec, attempts: int = 5) -> Any:
    """The study's RDB storage. Workers that start together may race to create its tables (PostgreSQL
    reports a unique violation for one of them): that attempt is retried after the other has finished."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return _rdb_storage(spec)
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)


def _rdb_storage(spec: SweepSpec) -> Any:
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    return RDBStorage(
        spec.storage_url,
        heartbeat_interval=spec.heartbeat_interval,
        grace_period=spec.grace_period,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry),
        engine_kwargs=None if spec.storage_url.startswith("sqlite") else {"pool_pre_ping": True},
    )


def open_study(spec: SweepSpec, wait: float = 60.0) -> Any:
    """Create the study and enqueue its budget, or load it (and wait until its creator enqueued)."""
    import optuna

    storage = _storage(spec)
    sampler, pruner = make_sampler(spec.sampler), make_pruner(spec.pruner)
    try:
        study = optuna.create_study(study_name=spec.study_name, storage=storage, direction=spec.direction,
                                    sampler=sampler, pruner=pruner)
        for i in range(spec.n_trials):  # the budget: user-chosen points first, then sampler-chosen ones
            study.enqueue_trial(spec.enqueue[i] if i < len(spec.enqueue) else {}, skip_if_exists=False)
        study.set_user_attr(ENQUEUED_ATTR, spec.n_trials)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(f"study {spec.study_name!r} in {spec.storage_url} exists with direction "
                          f"{study.direction.name.lower()}, the sweep file says {spec.direction}")
    deadline = time.time() + wait
    while ENQUEUED_ATTR not in study.user_attrs and time.time() < deadline:
        time.sleep(0.5)
    enqueued = int(study.user_attrs.get(ENQUEUED_ATTR, 0))
    if spec.n_trials > enqueued:  # a resumed study with a larger budget: top it up
        for _ in range(spec.n_trials - enqueued):
            study.enqueue_trial({}, skip_if_exists=False)
        study.set_user_attr(ENQUEUED_ATTR, spec.n_trials)
    return study


def _pop_trial(study: Any) -> Any:
    """Atomically claim one queued trial, or ``None`` when the budget is used up.

    ``Study.ask`` would create a fresh trial when the queue is empty, which lets concurrent workers run
    more trials than the budget; claiming only queued trials keeps the total exact.
    """
    import optuna

    study._thread_local.cached_all_trials = None
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


class _Heartbeat:
    """Record the trial's heartbeat while its process runs (Optuna's stale-trial detection)."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "_Heartbeat":
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _condition_holds(p: Param, values: dict[str, Any], base: dict[str, Any]) -> bool:
    return all(values.get(k, base.get(k)) == v for k, v in p.when.items())


def _best_value(run_dir: Path, metric: str, direction: str) -> float:
    import csv

    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise RuntimeError(f"the trial wrote no {path}")
    rows = list(csv.DictReader(open(path)))
    values = [float(r[metric]) for r in rows if r.get(metric) not in (None, "")]
    if not values:
        cols = sorted({k for r in rows for k, v in r.items() if v})
        raise RuntimeError(f"metric {metric!r} was never logged; logged metrics: {cols}")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        raise RuntimeError(f"metric {metric!r} was never finite")
    return max(finite) if direction == "maximize" else min(finite)


def _failure_reason(run_dir: Path, code: int, console: str) -> str:
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            err = json.loads(summary.read_text()).get("error")
            if err:
                return err
        except json.JSONDecodeError:
            pass
    if code < 0:
        return f"killed by signal {-code}" + (" (out of memory?)" if -code == 9 else "")
    lines = [ln for ln in console.strip().splitlines() if ln.strip()]
    ours = [i for i, ln in enumerate(lines) if re.match(r"^lightning_gm( \w+)?: error:", ln)]
    if ours:
        return " ".join(ln.strip() for ln in lines[ours[-1]:])[:2000]
    errs = [ln for ln in lines if "error" in ln.lower()]
    return (errs or lines or [f"exit code {code}"])[-1][:2000]


def _duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _run_process(args: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run one ``lightning_gm`` process with its console in ``log_path``; a SIGINT or SIGTERM that reaches this
    worker is passed on to it (a SIGINT from a terminal already reached it: it is sent again only if the process
    is still running after a grace period), and the worker waits for it to stop cleanly before raising."""
    from lightning_gm import signals

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as console:
        proc = subprocess.Popen(args, env=env, stdout=console, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt as exc:
            name = signals.stop_signal_of(exc) or "SIGINT"
            if name == "SIGINT":
                try:
                    proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


def _record(run_dir: Path, **fields: Any) -> None:
    """Add ``fields`` to a trial's ``summary.json`` (written by its finished process)."""
    from lightning_gm.callbacks.summary import read_summary, write_json_atomic

    if (run_dir / "summary.json").is_file():
        write_json_atomic(run_dir / "summary.json", {**read_summary(run_dir), **fields})


def run_trial(spec: SweepSpec, study: Any, trial: Any, base_flat: dict[str, Any], log: Any = print) -> None:
    """Sample the trial's values, run its ``fit`` in a subprocess and tell the study how it ended (one line)."""
    from optuna.trial import TrialState

    from lightning_gm import signals
    from lightning_gm.callbacks.pruning import PRUNED_EXIT_CODE, TRIAL_ENV

    values: dict[str, Any] = {}
    for p in spec.space:
        if _condition_holds(p, values, base_flat):
            values[p.key] = p.suggest(trial)
    run_name = f"trial-{trial.number:04d}"
    run_dir = spec.out_dir / run_name
    if run_dir.exists():  # a retried trial starts clean
        shutil.rmtree(run_dir)
    args = [sys.executable, "-m", "lightning_gm", "fit", "--config", str(spec.base_config)]
    args += [_override(k, v) for k, v in spec.overrides.items()]
    args += [_override(k, v) for k, v in values.items()]
    args += [f"--experiment={spec.study_name}", f"--run_name={run_name}", f"--runs_dir={spec.out_dir.parent}",
             f"--tags=[\"sweep:{spec.study_name}\", \"trial:{trial.number}\"]",
             f"--test_after_fit={'true' if spec.test == 'each' else 'false'}", "--trainer.enable_progress_bar=false"]
    env = dict(os.environ)
    env[TRIAL_ENV] = json.dumps({
        "storage": spec.storage_url, "study": spec.study_name, "trial_id": trial._trial_id,
        "metric": spec.metric, "pruner": spec.pruner,
    })
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("command", " ".join(args))
    name = f"[sweep {spec.study_name}] trial {trial.number}"
    log(f"{name} started: {values}")
    start = time.time()
    log_path = spec.out_dir / f"{run_name}.log"
    try:
        with _Heartbeat(study._storage, trial._trial_id, spec.heartbeat_interval):
            code = _run_process(args, env, log_path)
    except KeyboardInterrupt as exc:
        sig = signals.stop_signal_of(exc) or "SIGINT"
        reason = f"interrupted by {sig}"
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        _record(run_dir, sweep={"study": spec.study_name, "trial": trial.number, "metric": spec.metric,
                                "direction": spec.direction, "value": None, "state": "FAIL"})
        log(f"{name} FAIL in {_duration(time.time() - start)}: {reason} (queued again; {run_dir})")
        raise
    took = _duration(time.time() - start)
    record = {"study": spec.study_name, "trial": trial.number, "metric": spec.metric, "direction": spec.direction}
    if code == PRUNED_EXIT_CODE:
        study.tell(trial, state=TrialState.PRUNED)
        steps = study._storage.get_trial(trial._trial_id).intermediate_values
        last = f" at epoch {max(steps) + 1} ({spec.metric} = {steps[max(steps)]:.6g})" if steps else ""
        _record(run_dir, sweep={**record, "value": steps[max(steps)] if steps else None, "state": "PRUNED"})
        log(f"{name} PRUNED{last} in {took}")
        return
    if code == 0:
        try:
            value = _best_value(run_dir, spec.metric, spec.direction)
        except RuntimeError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            log(f"{name} FAIL in {took}: {exc}")
            return
        study.tell(trial, value)
        _record(run_dir, sweep={**record, "value": value, "state": "COMPLETE"})
        log(f"{name} COMPLETE {spec.metric} = {value:.6g} in {took} ({run_dir})")
        return
    console = log_path.read_text(errors="replace") if log_path.is_file() else ""
    reason = _failure_reason(run_dir, code, console)
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    _record(run_dir, sweep={**record, "value": None, "state": "FAIL"})
    log(f"{name} FAIL in {took}: {reason}")


def test_trial(spec: SweepSpec, trial: Any, log: Any = print) -> Optional[dict[str, Any]]:
    """Test a finished trial's best checkpoint in its run folder (``lightning_gm test``); its numbers go to the
    trial's ``summary.json`` and W&B run. Returns that summary, or ``None`` if the test failed."""
    from lightning_gm.callbacks.summary import read_summary

    run_dir = Path(trial.user_attrs.get("run_dir", ""))
    name = f"[sweep {spec.study_name}] trial {trial.number}"
    if not (run_dir / "config.yaml").is_file():
        log(f"{name}: not tested, no {run_dir / 'config.yaml'}")
        return None
    args = [sys.executable, "-m", "lightning_gm", "test", "--config", str(run_dir / "config.yaml"),
            "--trainer.enable_progress_bar=false"]
    start = time.time()
    log_path = spec.out_dir / f"{run_dir.name}-test.log"
    code = _run_process(args, dict(os.environ), log_path)
    summary = read_summary(run_dir)
    test = summary.get("test") or {}
    if code != 0 or not test:
        log(f"{name}: test FAIL in {_duration(time.time() - start)} (see {log_path})")
        return None
    nll = test.get("test/nll")
    err = test.get("test/nll_stderr")
    shown = (f"test/nll = {nll:.2f}" + (f" ± {err:.2f}" if isinstance(err, float) else "")
             + f" ({summary.get('estimator')})") if isinstance(nll, float) else "tested"
    log(f"{name}: {shown} in {_duration(time.time() - start)}")
    return summary


def run_sweep(spec: SweepSpec, log: Any = print) -> dict[str, Any]:
    """Run trials of the study until its queue is empty (or this worker's ``timeout``), then report. A SIGINT or
    SIGTERM stops the running trial cleanly (it is queued again), writes the report and is raised again."""
    import optuna
    from optuna.storages import fail_stale_trials

    from lightning_gm import signals

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker prints one line per trial instead
    study = open_study(spec)
    base_flat = flatten(resolved_base_config(spec.base_config))
    start = time.time()
    log(f"[sweep {spec.study_name}] {spec.n_trials} trials of {spec.base_config.name} in {spec.out_dir}, "
        f"{spec.direction} {spec.metric}; storage {spec.storage_url}")
    try:
        while spec.timeout is None or time.time() - start < spec.timeout:
            fail_stale_trials(study)  # trials of dead workers: failed, and re-queued by the retry callback
            trial = _pop_trial(study)
            if trial is None:
                break
            run_trial(spec, study, trial, base_flat, log)
        summary = report(spec, study, log)
        if spec.test == "best":
            _test_best(spec, study, summary, log)
        return summary
    except KeyboardInterrupt as exc:
        report(spec, study, log)
        name = signals.stop_signal_of(exc) or "SIGINT"
        log(f"[sweep {spec.study_name}] stopped by {name}; the same command continues the study")
        raise


def _test_best(spec: SweepSpec, study: Any, summary: dict[str, Any], log: Any) -> None:
    """Test the study's best trial once the study is done (no trial waiting or running) and not yet tested."""
    from optuna.trial import TrialState

    from lightning_gm.callbacks.summary import read_summary

    if "best_trial" not in summary:
        return
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in study.get_trials(deepcopy=False)):
        return  # other workers are still running trials: the last one to finish tests the best
    best = study.best_trial
    run_dir = Path(best.user_attrs.get("run_dir", ""))
    if (read_summary(run_dir).get("test") or {}).get("test/nll") is not None:
        return
    tested = test_trial(spec, best, log)
    if tested is not None:
        summary["best_test"] = {k: v for k, v in (tested.get("test") or {}).items() if k.startswith("test/nll")}
        summary["best_estimator"] = tested.get("estimator")
        write_study_json(spec.out_dir, summary)

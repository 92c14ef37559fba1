"""``lightning_gm sweep``: Optuna studies over any experiment config, from one process to many workers.

A sweep file names a base config and a search space over its dotted keys::

    base_config: conf/vae_digits.yaml      # any experiment config (relative to the sweep file or cwd)
    study_name: vae_digits
    metric: val/elbo
    direction: maximize
    n_trials: 20                           # trials in the study, shared by every worker
    timeout: null                          # seconds this worker keeps starting trials
    sampler: {name: tpe, seed: 0}          # tpe | random
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 1}   # median | hyperband | none
    storage: null                          # default sqlite:///<runs_dir>/sweeps/<study>.db; any RDB URL
    runs_dir: runs
    test: best                             # test the best trial at the end (best), every trial (each), or none
    overrides: {trainer.max_epochs: 5}     # fixed for every trial
    enqueue:                               # optional points to try first (part of n_trials)
      - {model.init_args.latent_dim: 8}
    space:
      model.init_args.latent_dim: {type: int, low: 2, high: 32, log: true}
      model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.init_args.activation: {type: categorical, choices: [tanh, relu]}
      model.init_args.num_layers:          # conditional: only sampled when the condition holds
        {type: int, low: 2, high: 8, when: {model.class_path: lightning_gm.models.Flow}}

Each trial is a full ``lightning_gm fit`` in its own process (so crashes, NaNs, out-of-memory kills and
DDP re-launches stay inside the trial), in the study's own folder ``<runs_dir>/sweeps/<study>/trial-NNNN/``
(its console in ``trial-NNNN.log`` beside it), W&B-grouped by study and tagged with the trial number. The
trial process reports ``metric`` after every validation epoch to the study and stops early when the pruner
says so. A line is printed as each trial ends (its value, state and time), the trial's ``summary.json``
records its ``sweep`` value (the leaderboard's column), and the best trial (or each) is tested. SIGINT or
SIGTERM stops the worker within seconds: the running trial is stopped the same way (its ``last.ckpt`` and
status written), marked failed with the signal as its reason and queued again, and the report is written;
the same command continues the study. The study's budget of ``n_trials`` is enqueued once,
when the study is created, and workers pop trials from that queue atomically, so several workers on
several machines (PostgreSQL storage) run exactly ``n_trials`` trials between them. Trials have a
heartbeat: a worker killed mid-trial leaves its trial marked failed by the next living worker,
which re-queues it with the same parameters and runs it.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lightning_gm.errors import ConfigError

__all__ = ["Param", "SweepSpec", "load_sweep", "run_sweep", "main"]

_TESTS = ("none", "best", "each")
_ENQUEUED_ATTR = "lightning_gm:n_trials_enqueued"
_TYPES = ("float", "int", "categorical")


@dataclass
class Param:
    """One dimension of the search space, over the dotted config key ``key``."""

    key: str
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list[Any]] = None
    when: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, key: str, spec: Any, where: str) -> "Param":
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: space.{key} must be a mapping with a 'type', got {spec!r}")
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
        if unknown:
            raise ConfigError(f"{where}: space.{key} has unknown field(s) {sorted(unknown)}")
        kind = spec.get("type")
        if kind not in _TYPES:
            raise ConfigError(f"{where}: space.{key}.type must be one of {list(_TYPES)}, got {kind!r}")
        p = cls(key=key, type=kind, low=spec.get("low"), high=spec.get("high"), log=bool(spec.get("log", False)),
                step=spec.get("step"), choices=spec.get("choices"), when=dict(spec.get("when") or {}))
        if kind == "categorical":
            if not isinstance(p.choices, list) or not p.choices:
                raise ConfigError(f"{where}: space.{key} is categorical but its 'choices' list is empty or missing")
        else:
            if p.low is None or p.high is None:
                raise ConfigError(f"{where}: space.{key} ({kind}) needs both 'low' and 'high'")
            if p.low > p.high:
                raise ConfigError(f"{where}: space.{key} has low > high ({p.low} > {p.high})")
            if p.log and p.low <= 0:
                raise ConfigError(f"{where}: space.{key} is log-scaled so 'low' must be > 0, got {p.low}")
            if kind == "int" and (int(p.low) != p.low or int(p.high) != p.high):
                raise ConfigError(f"{where}: space.{key} is an int range but low/high are not integers")
        return p

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, self.choices)


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring for the format)."""

    path: Path
    base_config: Path
    study_name: str
    metric: str
    direction: str
    space: list[Param]
    n_trials: int = 10
    timeout: Optional[float] = None
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    storage: Optional[str] = None
    runs_dir: str = "runs"
    overrides: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    test: str = "best"

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        folder = Path(self.runs_dir) / "sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / (self.study_name + '.db')}"

    @property
    def out_dir(self) -> Path:
        """The study's folder: its trials' run folders and logs, its report (``study.json``, ``best.yaml``, plots)."""
        return Path(self.runs_dir) / "sweeps" / self.study_name


_SWEEP_KEYS = {
    "base_config", "study_name", "metric", "direction", "space", "n_trials", "timeout", "sampler", "pruner",
    "storage", "runs_dir", "overrides", "heartbeat_interval", "grace_period", "max_retry", "enqueue", "test",
}


def _resolve_base(base: str, sweep_path: Path) -> Path:
    for candidate in (Path(base), sweep_path.parent / base, sweep_path.parent.parent / base):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{sweep_path}: base_config {base!r} not found (looked relative to the current folder "
                      f"and to {sweep_path.parent})")


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out[key] = v
            out.update(_flatten(v, key))
    return out


def resolved_base_config(base: Path) -> dict[str, Any]:
    """The full resolved base config (as ``fit --print_config`` prints it)."""
    import contextlib
    import io

    from lightning_gm.command import main as cli_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cli_main(["fit", "--config", str(base), "--print_config"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise ConfigError(f"base_config {base} does not parse: run `lightning_gm fit --config {base} "
                                  "--print_config` to see why") from exc
    return yaml.safe_load(buf.getvalue())


def load_sweep(path: str | os.PathLike, storage: Optional[str] = None, check_keys: bool = True) -> SweepSpec:
    """Parse and validate a sweep file; ``storage`` overrides the file's storage."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    unknown = set(raw) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_SWEEP_KEYS)}")
    for key in ("base_config", "metric", "space"):
        if key not in raw:
            raise ConfigError(f"{where}: '{key}' is required")
    direction = str(raw.get("direction", "minimize")).lower()
    if direction in ("max", "maximise"):
        direction = "maximize"
    if direction in ("min", "minimise"):
        direction = "minimize"
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"{where}: direction must be minimize or maximize, got {raw.get('direction')!r}")
    if not isinstance(raw["space"], dict) or not raw["space"]:
        raise ConfigError(f"{where}: 'space' must be a non-empty mapping of dotted config keys")
    space = [Param.parse(k, v, where) for k, v in raw["space"].items()]
    for i, p in enumerate(space):
        later = [c for c in p.when if c in {q.key for q in space[i:]}]
        if later:
            raise ConfigError(f"{where}: space.{p.key}.when names {later[0]!r}, which must come before it in 'space'")
    base = _resolve_base(str(raw["base_config"]), path)
    spec = SweepSpec(
        path=path, base_config=base, study_name=str(raw.get("study_name") or path.stem), metric=str(raw["metric"]),
        direction=direction, space=space, n_trials=int(raw.get("n_trials", 10)), timeout=raw.get("timeout"),
        sampler=dict(raw.get("sampler") or {"name": "tpe", "seed": 0}),
        pruner=dict(raw.get("pruner") or {"name": "median"}), storage=storage or raw.get("storage"),
        runs_dir=str(raw.get("runs_dir", "runs")), overrides=dict(raw.get("overrides") or {}),
        heartbeat_interval=int(raw.get("heartbeat_interval", 10)), grace_period=int(raw.get("grace_period", 30)),
        max_retry=int(raw.get("max_retry", 2)), enqueue=list(raw.get("enqueue") or []),
        test=str(raw.get("test", "best")).lower(),
    )
    if spec.test not in _TESTS:
        raise ConfigError(f"{where}: test must be one of {list(_TESTS)}, got {raw.get('test')!r}")
    keys = {p.key for p in space}
    for i, point in enumerate(spec.enqueue):
        bad = set(point) - keys if isinstance(point, dict) else {"(not a mapping)"}
        if bad:
            raise ConfigError(f"{where}: enqueue[{i}] sets {sorted(bad)}, which are not in 'space'")
    if len(spec.enqueue) > spec.n_trials:
        raise ConfigError(f"{where}: enqueue lists {len(spec.enqueue)} points but n_trials is {spec.n_trials}")
    if spec.n_trials < 1:
        raise ConfigError(f"{where}: n_trials must be >= 1, got {spec.n_trials}")
    make_sampler(spec.sampler, where)
    make_pruner(spec.pruner, where)
    if check_keys:
        known = _flatten(resolved_base_config(base))
        names = {p.key for p in space}
        for p in space:
            for cond in p.when:
                if cond not in known and cond not in names:
                    raise ConfigError(f"{where}: space.{p.key}.when refers to unknown config key {cond!r}")
            if not p.when and p.key not in known:
                close = [k for k in known if k.rsplit(".", 1)[-1] == p.key.rsplit(".", 1)[-1]][:3]
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ConfigError(f"{where}: space key {p.key!r} is not a key of the base config {base}{hint}")
        for key in spec.overrides:
            if key not in known:
                raise ConfigError(f"{where}: overrides key {key!r} is not a key of the base config {base}")
    return spec


def make_sampler(spec: dict[str, Any], where: str = "sweep") -> Any:
    """The Optuna sampler a sweep file's ``sampler: {name: tpe | random, ...}`` describes."""
    import optuna

    from lightning_gm.callbacks.pruning import from_spec

    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return from_spec("sampler", samplers, spec, "tpe", where)


def make_pruner(spec: dict[str, Any], where: str = "sweep") -> Any:
    """The study's pruner (:func:`lightning_gm.callbacks.pruning.make_pruner`, which the trial processes use)."""
    from lightning_gm.callbacks.pruning import make_pruner as pruner

    return pruner(spec, where)


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
        study.set_user_attr(_ENQUEUED_ATTR, spec.n_trials)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(f"study {spec.study_name!r} in {spec.storage_url} exists with direction "
                          f"{study.direction.name.lower()}, the sweep file says {spec.direction}")
    deadline = time.time() + wait
    while _ENQUEUED_ATTR not in study.user_attrs and time.time() < deadline:
        time.sleep(0.5)
    enqueued = int(study.user_attrs.get(_ENQUEUED_ATTR, 0))
    if spec.n_trials > enqueued:  # a resumed study with a larger budget: top it up
        for _ in range(spec.n_trials - enqueued):
            study.enqueue_trial({}, skip_if_exists=False)
        study.set_user_attr(_ENQUEUED_ATTR, spec.n_trials)
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
    base_flat = _flatten(resolved_base_config(spec.base_config))
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
        _write_study_json(spec.out_dir, summary)


def _write_study_json(out: Path, summary: dict[str, Any]) -> None:
    tmp = out / ".study.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, out / "study.json")


def report(spec: SweepSpec, study: Any, log: Any = print) -> dict[str, Any]:
    """The best trial, a ready-to-run config of it, importance and history plots, and ``study.json``."""
    from optuna.trial import TrialState

    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    summary: dict[str, Any] = {
        "study": spec.study_name, "storage": spec.storage_url, "metric": spec.metric, "direction": spec.direction,
        "trials": {k: v for k, v in counts.items() if v},
        "failed": {t.number: t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL},
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_run_dir=best.user_attrs.get("run_dir"))
        src = Path(best.user_attrs.get("run_dir", "")) / "config.yaml"
        if src.is_file():
            cfg = yaml.safe_load(src.read_text())
            cfg["experiment"], cfg["run_name"], cfg["runs_dir"] = f"{spec.study_name}_best", None, spec.runs_dir
            cfg["test_after_fit"] = True
            cfg["tags"] = [t for t in cfg.get("tags") or [] if not str(t).startswith(("sweep:", "trial:"))]
            best_cfg = out / "best.yaml"
            header = (f"# Best trial {best.number} of study {spec.study_name}: {spec.metric} = {best.value}\n"
                      f"# Reproduce with: lightning_gm fit --config {best_cfg}\n")
            best_cfg.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
            summary["best_config"] = str(best_cfg)
        summary["plots"] = _plots(study, out)
        log(f"[sweep {spec.study_name}] best trial {best.number}: {spec.metric} = {best.value:.6g} "
            f"with {best.params}")
    _write_study_json(out, summary)
    log(f"[sweep {spec.study_name}] {summary['trials']}; report in {out / 'study.json'}")
    return summary


def _plots(study: Any, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    from lightning_gm.images import save_figure

    written = []
    for name, fn in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances)):
        try:
            ax = fn(study)
            fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            save_figure(fig, out / f"{name}.png")
            written.append(str(out / f"{name}.png"))
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importance needs 2+ trials
            (out / f"{name}.txt").write_text(f"not drawn: {exc}\n")
    return written


def main(argv: list[str]) -> int:
    """``lightning_gm sweep --config SWEEP.yaml [--storage URL] [--n_trials N] [--timeout S] [--test best|each|none]``."""
    parser = argparse.ArgumentParser(prog="lightning_gm sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", required=True, help="the sweep file (YAML)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (overrides the file's)")
    parser.add_argument("--n_trials", type=int, default=None, help="study budget (overrides the file's)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds this worker starts new trials")
    parser.add_argument("--test", choices=_TESTS, default=None,
                        help="test the best trial at the end, each trial, or none (overrides the file's; default best)")
    parser.add_argument("--check", action="store_true", help="only validate the sweep file and exit")
    args = parser.parse_args(argv)
    spec = load_sweep(args.config, storage=args.storage)
    if args.n_trials is not None:
        spec.n_trials = args.n_trials
    if args.timeout is not None:
        spec.timeout = args.timeout
    if args.test is not None:
        spec.test = args.test
    if args.check:
        print(f"{args.config}: OK ({len(spec.space)} parameters over {spec.base_config})")
        return 0
    run_sweep(spec, log=lambda line: print(line, flush=True))
    return 0

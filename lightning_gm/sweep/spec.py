"""The sweep file: its keys, the search space (:class:`Param`, conditional parameters), the checks that name the
key at fault, and Optuna's sampler and pruner built from it (format in :mod:`lightning_gm.sweep`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lightning_gm.errors import ConfigError

__all__ = ["Param", "SweepSpec", "load_sweep", "resolved_base_config", "make_sampler", "make_pruner", "flatten", "TESTS",
           "ENQUEUED_ATTR"]


TESTS = ("none", "best", "each")


ENQUEUED_ATTR = "lightning_gm:n_trials_enqueued"


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


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out[key] = v
            out.update(flatten(v, key))
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
    if spec.test not in TESTS:
        raise ConfigError(f"{where}: test must be one of {list(TESTS)}, got {raw.get('test')!r}")
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
        known = flatten(resolved_base_config(base))
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

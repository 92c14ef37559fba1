"""Find run folders and read what the leaderboard needs from them, tolerating half-written runs.

A run folder is any folder below the root that holds a ``summary.json`` or a ``config.yaml`` (the
``lightning_gm`` command writes both), sweep trials included (``runs/sweeps/<study>/trial-NNNN/``); a sweep's
own report folder (``study.json``) is not a run. A folder whose summary is missing or unreadable is still
listed, with its status saying why, so a crashed or running run never breaks the comparison.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["RunRecord", "find_runs", "read_run"]

_SKIP = {"checkpoints", "samples", "wandb", "tensorboard", "__pycache__"}


@dataclass
class RunRecord:
    """One row of the leaderboard (every field plain data: it goes into JSON and HTML as text)."""

    path: str
    experiment: str = ""
    run_name: str = ""
    status: str = "unknown"
    family: str = ""
    model: str = ""
    dataset: str = ""
    binarize: str = ""
    test_nll: Optional[float] = None
    nll_stderr: Optional[float] = None
    bpd: Optional[float] = None
    estimator: str = ""  #: what produced test_nll, with its subset / schedule when it is not the full protocol
    nll_conservative: Optional[float] = None  #: the conservative counterpart (RAISE / BDMC) on a stated subset
    nll_conservative_stderr: Optional[float] = None
    conservative_estimator: str = ""
    ais_ess: Optional[float] = None  #: effective sample size of the AIS runs behind log Z
    ais_runs: Optional[int] = None
    warnings: list[str] = field(default_factory=list)  #: what a reader must see beside the numbers
    monitor: str = ""  #: the model's own validation metric and its best value
    best_score: Optional[float] = None
    sweep: dict[str, Any] = field(default_factory=dict)  #: study, trial, metric, value, state of a sweep trial
    fd_lenet: Optional[float] = None  #: sample quality (callbacks.SampleQuality): Fréchet distance, LeNet features
    precision: Optional[float] = None  #: k-NN manifold precision of the samples
    recall: Optional[float] = None  #: k-NN manifold recall of the samples
    num_parameters: Optional[int] = None
    epochs: Optional[int] = None
    wall_time_s: Optional[float] = None
    tags: list[str] = field(default_factory=list)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    sample_png: Optional[str] = None  #: base64 PNG of the latest samples
    sample_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _curves(path: Path, max_points: int = 400) -> dict[str, list[list[float]]]:
    """Epoch-level metrics from ``metrics.csv``: ``{metric: [[epoch, value], ...]}``. Rows whose step goes back
    are left out: a later ``validate`` or ``test`` of the run logs at step 0 (Lightning does not restore the loop's
    counters to evaluate), and is not a point of the training curve."""
    out: dict[str, list[list[float]]] = {}
    latest = -math.inf
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                epoch, step = _num(row.get("epoch")), _num(row.get("step"))
                if epoch is None or (step is not None and step < latest):
                    continue
                latest = step if step is not None else latest
                for key, value in row.items():
                    if not key or key in ("epoch", "step") or key.endswith("_step") or key.startswith("test/"):
                        continue
                    v = _num(value)
                    if v is not None:
                        out.setdefault(key.removesuffix("_epoch"), []).append([epoch, v])
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    return {k: v[:: max(1, len(v) // max_points)] for k, v in out.items()}


def _latest_samples(folder: Path) -> tuple[Optional[str], str]:
    pics = sorted(folder.glob("samples_*.png"), key=lambda p: (len(p.name), p.name))
    if not pics:
        return None, ""
    try:
        return base64.b64encode(pics[-1].read_bytes()).decode("ascii"), pics[-1].name
    except OSError:
        return None, ""


def read_run(folder: Path, root: Path) -> RunRecord:
    """Read one run folder; never raises for a damaged run (its ``status`` says what is wrong)."""
    rel = folder.relative_to(root) if folder.is_relative_to(root) else folder
    parts = rel.parts
    rec = RunRecord(path=str(folder), experiment=parts[-2] if len(parts) > 1 else "", run_name=folder.name)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        rec.status = "incomplete: no summary.json"
    else:
        try:
            s = json.loads(summary_path.read_text())
            if not isinstance(s, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            rec.status = f"corrupt summary.json: {exc}"[:200]
        else:
            test = s.get("test") or {}
            data = s.get("data") or {}
            rec.experiment = str(s.get("experiment") or rec.experiment)
            rec.run_name = str(s.get("run_name") or rec.run_name)
            rec.status = str(s.get("status", "unknown"))
            rec.family = str(s.get("family") or "")
            rec.model = str(s.get("model") or "").rsplit(".", 1)[-1]
            rec.dataset = str(data.get("dataset") or "")
            binarize = str(data.get("binarize") or "")
            rec.binarize = "dequantized" if data.get("dequantize") and binarize in ("", "none") else binarize
            rec.test_nll = _num(test.get("test/nll"))
            rec.nll_stderr = _num(test.get("test/nll_stderr"))
            rec.bpd = _num(test.get("test/bpd"))
            rec.estimator = str(s.get("estimator") or "")
            rec.nll_conservative = _num(test.get("test/nll_conservative"))
            rec.nll_conservative_stderr = _num(test.get("test/nll_conservative_stderr"))
            rec.conservative_estimator = str(s.get("conservative_estimator") or "")
            rec.ais_ess = _num(test.get("test/ais_ess"))
            runs = _num(test.get("test/ais_runs"))
            rec.ais_runs = int(runs) if runs is not None else None
            rec.warnings = [str(w) for w in s.get("warnings") or [] if str(w).strip()]
            rec.monitor = str(s.get("monitor") or "")
            rec.best_score = _num(s.get("best_score"))
            sweep = s.get("sweep")
            rec.sweep = dict(sweep) if isinstance(sweep, dict) else {}
            rec.fd_lenet = _num(test.get("test/fd_lenet"))
            rec.precision = _num(test.get("test/precision"))
            rec.recall = _num(test.get("test/recall"))
            rec.num_parameters = int(s["num_parameters"]) if _num(s.get("num_parameters")) is not None else None
            rec.epochs = int(s["epochs"]) if _num(s.get("epochs")) is not None else None
            rec.wall_time_s = _num(s.get("fit_wall_time_s"))
            rec.tags = [str(t) for t in s.get("tags") or []]
    rec.curves = _curves(folder / "metrics.csv")
    rec.sample_png, rec.sample_name = _latest_samples(folder / "samples")
    return rec


def _is_study_report(folder: Path) -> bool:
    """A sweep's report folder (``study.json``, or an older ``summary.json`` of a study): not a run."""
    if (folder / "study.json").is_file() and not (folder / "config.yaml").is_file():
        return True
    try:
        data = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and not (folder / "config.yaml").is_file() and (
        not data or ("study" in data and "trials" in data))


def find_runs(root: str | Path) -> list[RunRecord]:
    """Every run folder below ``root`` (``root`` itself may be one), sorted by experiment and name."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = set()
    for marker in ("summary.json", "config.yaml"):
        for p in root.rglob(marker):
            if not _SKIP.intersection(p.relative_to(root).parts[:-1]) and not _is_study_report(p.parent):
                folders.add(p.parent)
    return sorted((read_run(f, root) for f in folders), key=lambda r: (r.experiment, r.run_name, r.path))


def natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]

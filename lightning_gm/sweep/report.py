"""The study's report: the best trial, a ready-to-run config of it (``best.yaml``), history and importance
plots, and ``study.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lightning_gm.atomic import write_text_atomic
from lightning_gm.sweep.spec import SweepSpec

__all__ = ["report", "write_study_json"]


def write_study_json(out: Path, summary: dict[str, Any]) -> None:
    write_text_atomic(out / "study.json", json.dumps(summary, indent=2, default=str) + "\n")


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
    write_study_json(out, summary)
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

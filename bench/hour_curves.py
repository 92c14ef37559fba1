"""Learning curves of run folders against wall time, with the test number and the published figure beside them.

Each run's validation metric is read back from its offline W&B run as a user would (``wandb leet inspect --json``:
every history row carries ``_runtime``, the seconds since the run started), its test number and estimator from
``summary.json``. One panel per run::

    python bench/hour_curves.py --out docs/hour_runs.png \\
        "VAE (Burda recipe)=runs/vae_burda/burda_90min:val/elbo:-1:86.76:Burda et al. 2016 VAE, k=1" \\
        "RBM CD-25=runs/rbm_cd25/cd25_105min:val/nll_ais:1:86.34:Salakhutdinov & Murray 2008 CD25(500)" \\
        "RealNVP=runs/realnvp/plain64_90min:val/bpd:1:1.06:Dinh et al. 2017"

Each argument is ``label=run_folder:metric:sign:published:published_label``: ``sign`` turns the logged metric into
the plotted NLL (``-1`` for an ELBO), ``published`` is drawn as a dashed line. The test number is the point at the
end of the fit (its estimator in the legend); the curve is the validation metric (for a VAE a bound, for an RBM a
short AIS, so a curve point is not the test estimator).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path


def history(run: Path, metric: str) -> list[tuple[float, float]]:
    """``(seconds since start, value)`` of ``metric`` in the run's W&B history (all its W&B run files in order, so a
    resumed run continues its curve)."""
    files = sorted((run / "wandb").glob("*run-*/run-*.wandb"))
    if not files:
        raise SystemExit(f"{run}: no W&B run under {run / 'wandb'} (the curve is read from the W&B history)")
    points: list[tuple[float, float]] = []
    offset = 0.0
    for path in files:
        out = subprocess.run(["wandb", "leet", "inspect", "--json", str(path)], capture_output=True, text=True,
                             check=True).stdout
        last = 0.0
        for line in out.splitlines():
            if '"type":"history"' not in line:
                continue
            item = json.loads(line)["history"]["item"]
            last = max(last, float(item.get("_runtime", 0.0)))
            if metric in item and item[metric] is not None:
                points.append((offset + float(item["_runtime"]), float(item[metric])))
        offset += last
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label=run_folder:metric:sign:published:published_label")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.runs), figsize=(5.2 * len(args.runs), 4.0), squeeze=False)
    for ax, spec in zip(axes[0], args.runs):
        label, rest = spec.split("=", 1)
        folder, metric, sign, published, published_label = rest.split(":", 4)
        run = Path(folder)
        points = history(run, metric)
        if not points:
            raise SystemExit(f"{run}: no '{metric}' in its W&B history")
        hours = [t / 3600 for t, _ in points]
        values = [float(sign) * v for _, v in points]
        ax.plot(hours, values, ".-", ms=3, lw=1, label=f"validation ({metric}{', negated' if float(sign) < 0 else ''})")
        summary = json.loads((run / "summary.json").read_text())
        test = summary.get("test") or {}
        key = "test/bpd" if metric.endswith("bpd") else "test/nll"
        if key in test:
            fit_h = (summary.get("fit_wall_time_s") or points[-1][0]) / 3600
            err = test.get("test/nll_stderr") if key == "test/nll" else None
            ax.errorbar([fit_h], [test[key]], yerr=[err] if err else None, fmt="o", color="C3",
                        label=f"test {test[key]:.2f} ({summary.get('estimator') or key})")
        ax.axhline(float(published), ls="--", color="k", lw=1, label=f"published {published} ({published_label})")
        ax.set_title(label)
        ax.set_xlabel("wall time (hours, this machine)")
        ax.set_ylabel("bits/dim" if metric.endswith("bpd") else "NLL (nats)")
        low = min(values + [float(published)])
        # long curves: leave out the first epochs' tall values; short ones are shown whole
        high = sorted(values)[int(0.9 * (len(values) - 1))] if len(values) >= 10 else max(values)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

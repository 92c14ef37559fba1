"""AIS schedule study on a trained 784-500 PCD RBM (issue 17): how the estimate of log Z, its ESS, the spread of
independent replicates, the reported interval and the AIS/RAISE bracket depend on the number of intermediate
distributions, their placement in [0.9, 1], the number of runs and the transition (Gibbs sweeps per step).

Every configuration is run ``--replicates`` times with independent seeds (100 runs each unless stated); a table
row gives the mean log Z over replicates, the spread (sd) of the replicates, the median reported s.e. and ESS,
the median width of the reported +-3 s.e. interval, the pooled estimate of all replicates' runs, and the seconds
per replicate. The bracket section runs RAISE (1 chain per example) on evenly spaced test images against the
forward estimate on the same images. Rows are appended to ``--out`` (JSON lines) as they finish, so a partial run
can be reported; ``--summarize`` prints the tables from that file.

    OMP_NUM_THREADS=1 python bench/ais_schedule_study.py --ckpt <run>/checkpoints/last.ckpt --out study.jsonl
    python bench/ais_schedule_study.py --summarize --out study.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from lightning_gm.estimators.ais import ais_log_partition, betas_schedule, summarize_log_weights
from lightning_gm.estimators.rbm_ais import RBMAnnealingPath
from lightning_gm.estimators.reverse import ReverseStart, raise_log_prob


def placed_schedule(steps: int, tail: float) -> list[float]:
    """``steps`` steps with a fraction ``tail`` of them in [0.9, 1] (linear), the rest shaped as the literature's
    500:4000 over [0, 0.5] and [0.5, 0.9]."""
    n_tail = max(1, round(steps * tail))
    head = steps - n_tail
    n1 = max(1, round(head * 500 / 4500))
    n2 = head - n1
    parts = [torch.zeros(1, dtype=torch.float64), torch.linspace(0, 0.5, n1 + 1, dtype=torch.float64)[1:],
             torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[1:], torch.linspace(0.9, 1.0, n_tail + 1, dtype=torch.float64)[1:]]
    return torch.cat(parts).tolist()


def geometric_tail_schedule(steps: int) -> list[float]:
    """The literature's [0, 0.9] part (4,500 : 10,000 of the steps before 0.9) and the [0.9, 1] part spaced
    uniformly in log(1 - beta) down to 1e-5, so the steps crowd toward beta = 1 where a PCD model mixes worst."""
    base = betas_schedule(steps).tolist()
    n_tail = sum(1 for b in base if b > 0.9)
    head = [b for b in base if b <= 0.9]
    gaps = torch.logspace(math.log10(0.1), -5, n_tail, dtype=torch.float64)
    tail = (1.0 - gaps).tolist()[1:] + [1.0]
    return head + tail


def _row(kind: str, label: str, results: list, seconds: list[float], runs: int, steps: int, **extra) -> dict:
    log_z = [r.log_z for r in results]
    pooled = summarize_log_weights(torch.cat([r.log_weights for r in results]), results[0].log_z_base, steps=steps)
    return {
        "kind": kind, "label": label, "runs": runs, "steps": steps, "replicates": len(results),
        "log_z_mean": statistics.mean(log_z), "log_z_sd": statistics.stdev(log_z) if len(log_z) > 1 else 0.0,
        "stderr_median": statistics.median(r.log_z_stderr for r in results),
        "delta_stderr_median": statistics.median(r.delta_stderr for r in results),
        "ess_median": statistics.median(r.effective_sample_size for r in results),
        "width_median": statistics.median(r.log_z_interval[1] - r.log_z_interval[0] for r in results),
        "pooled_log_z": pooled.log_z, "pooled_stderr": pooled.log_z_stderr, "pooled_ess": pooled.effective_sample_size,
        "pooled_runs": pooled.runs, "seconds": statistics.median(seconds), **extra,
    }


def _write(out: Path, row: dict) -> None:
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{row['kind']:>10} {row['label']:>34}: log Z {row.get('log_z_mean', float('nan')):.2f} "
          f"sd {row.get('log_z_sd', float('nan')):.2f} se {row.get('stderr_median', float('nan')):.2f} "
          f"ESS {row.get('ess_median', float('nan')):.1f} width {row.get('width_median', float('nan')):.2f} "
          f"({row.get('seconds', float('nan')):.0f} s)", flush=True)


def run_study(args: argparse.Namespace) -> None:
    from lightning_gm import load_model
    from lightning_gm.data import MNISTDataModule

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt).eval()
    out = Path(args.out)
    done = {(r["kind"], r["label"]) for r in _read(out)} if out.exists() else set()
    dm = MNISTDataModule(binarize="dynamic", eval_batch_size=1000)
    dm.setup("test")
    test_x = torch.cat([x.reshape(x.shape[0], -1) for x, _ in dm.test_dataloader()])
    with torch.no_grad():
        free_energy = model.rbm.free_energy(test_x).double()
    if ("meta", "model") not in done:
        _write(out, {"kind": "meta", "label": "model", "ckpt": str(args.ckpt), "test_examples": len(test_x),
                     "mean_free_energy": float(free_energy.mean()), "seconds": 0.0})
    rbm, base = model.rbm, model.ais_base.double()
    seed = iter(range(10_000, 10**9))

    def replicate(kind: str, label: str, runs: int, steps: int, betas=None, sweeps: int = 1, reps: int = args.replicates):
        if (kind, label) in done:
            return
        path = RBMAnnealingPath(rbm, base, sweeps=sweeps)
        results, seconds = [], []
        for _ in range(reps):
            t = time.perf_counter()
            results.append(ais_log_partition(path, runs, steps, betas=betas, generator=torch.Generator().manual_seed(next(seed))))
            seconds.append(time.perf_counter() - t)
        _write(out, _row(kind, label, results, seconds, runs, steps if betas is None else len(betas) - 1, sweeps=sweeps))

    # 1. number of intermediate distributions (the literature's shape), 100 runs; the longest last
    short = [k for k in args.steps if k <= 14500]
    for steps in short:
        replicate("steps", f"100 runs x {steps:,}", 100, steps)
    # 2. the bracket: forward AIS vs RAISE on evenly spaced test images
    n = args.bracket_examples
    idx = (torch.arange(n) * len(test_x)) // n
    xs = test_x[idx]
    numerator = -free_energy[idx]
    for steps in args.bracket_steps:
        label = f"RAISE 1x{steps:,} on {n} of {len(test_x):,}"
        if ("bracket", label) in done:
            continue
        t = time.perf_counter()
        path = RBMAnnealingPath(rbm, base)
        forward = ais_log_partition(path, 100, steps, generator=torch.Generator().manual_seed(next(seed)))
        raised = raise_log_prob(ReverseStart(path, xs, numerator, n), steps,
                                generator=torch.Generator().manual_seed(next(seed))).log_prob
        nll_forward = float(free_energy[idx].mean()) + forward.log_z
        _write(out, {"kind": "bracket", "label": label, "steps": steps, "examples": n,
                     "nll_subset": nll_forward, "nll_conservative": float(-raised.mean()),
                     "nll_conservative_stderr": float(raised.std() / math.sqrt(n)), "log_z": forward.log_z,
                     "log_z_stderr": forward.log_z_stderr, "ess": forward.effective_sample_size,
                     "seconds": time.perf_counter() - t})
    # 3. their placement in [0.9, 1] at 14,500 steps
    for tail in (0.5, 0.85, 0.95):
        replicate("placement", f"{tail:.0%} of 14,500 in [0.9, 1]", 100, 14500, betas=placed_schedule(14500, tail))
    replicate("placement", "log-spaced in [0.9, 1], 14,500", 100, 14500, betas=geometric_tail_schedule(14500))
    # 4. better transitions at the same cost: k sweeps per step over 1/k of the steps
    replicate("sweeps", "2 sweeps x 7,250", 100, 7250, sweeps=2)
    replicate("sweeps", "5 sweeps x 2,900", 100, 2900, sweeps=5)
    # 5. number of runs (the 100-run rows also pool into 100 x replicates); single larger batches
    for runs in args.runs:
        replicate("runs", f"{runs:,} runs x 14,500", runs, 14500, reps=max(2, args.replicates // 3))
    for steps in [k for k in args.steps if k > 14500]:
        replicate("steps", f"100 runs x {steps:,}", 100, steps, reps=max(2, args.replicates // 2))


def _read(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def summarize(out: Path) -> None:
    rows = _read(out)
    meta = next((r for r in rows if r["kind"] == "meta"), None)
    if meta:
        print(f"model: {meta['ckpt']}; {meta['test_examples']:,} test images, mean free energy {meta['mean_free_energy']:.3f} "
              f"(test NLL = mean F + log Z)\n")
    print("| section | schedule | replicates | mean log Z | replicate sd | reported s.e. (median) | delta s.e. (median) "
          "| ESS (median) | interval width (median) | pooled: log Z +- s.e. (runs, ESS) | s / replicate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["kind"] in ("meta", "bracket"):
            continue
        print(f"| {r['kind']} | {r['label']} | {r['replicates']} | {r['log_z_mean']:.2f} | {r['log_z_sd']:.2f} | "
              f"{r['stderr_median']:.2f} | {r['delta_stderr_median']:.2f} | {r['ess_median']:.1f} | {r['width_median']:.2f} | "
              f"{r['pooled_log_z']:.2f} +- {r['pooled_stderr']:.2f} ({r['pooled_runs']}, {r['pooled_ess']:.1f}) | "
              f"{r['seconds']:.0f} |")
    brackets = [r for r in rows if r["kind"] == "bracket"]
    if brackets:
        print("\n| bracket | forward NLL on the subset (AIS 100 runs) | RAISE NLL (conservative) | width | log Z (ESS) | s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in brackets:
            print(f"| {r['label']} | {r['nll_subset']:.2f} | {r['nll_conservative']:.2f} +- {r['nll_conservative_stderr']:.2f} | "
                  f"{r['nll_conservative'] - r['nll_subset']:.2f} | {r['log_z']:.2f} ({r['ess']:.1f}) | {r['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="the trained RBM (a checkpoint or run folder)")
    p.add_argument("--out", default="ais_schedule_study.jsonl")
    p.add_argument("--summarize", action="store_true", help="print the tables of --out and exit")
    p.add_argument("--replicates", type=int, default=10)
    p.add_argument("--steps", type=int, nargs="+", default=[1000, 5000, 14500, 50000])
    p.add_argument("--runs", type=int, nargs="+", default=[1000])
    p.add_argument("--bracket_examples", type=int, default=500)
    p.add_argument("--bracket_steps", type=int, nargs="+", default=[1000, 14500])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.summarize:
        summarize(Path(args.out))
        return 0
    if not args.ckpt:
        p.error("--ckpt is required to run the study")
    run_study(args)
    summarize(Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

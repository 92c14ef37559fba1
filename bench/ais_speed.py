"""AIS at the speed of its matrix products (issue 18): the platform's AIS against a bare vectorised loop of the
Salakhutdinov & Murray (2008) scheme, the cost of more runs, and the DBM path.

Contenders, timed interleaved (``bench/timing.py``) on the same 784-500 RBM (a checkpoint's, or random weights):

* ``platform``: :func:`lightning_gm.estimators.ais.ais_log_partition` on :class:`RBMAnnealingPath` (what a model's
  test runs), ``--runs`` chains;
* ``bare S&M loop``: ``RBM_AIS.m`` translated line by line to vectorised torch, float32 products and Gibbs draws
  (``torch.rand(...) < p``), log-weights accumulated in float64 as two softplus sums per step, as the MATLAB code;
* ``platform, 10x runs``: the same with ``10 * --runs`` chains (larger products);
* ``DBM``: :class:`DBMAnnealingPath` on a random 784-500-1000 DBM (``--dbm``).

Run on a quiet machine, one thread, from the repository root::

    OMP_NUM_THREADS=1 python bench/ais_speed.py --runs 100 --steps 14500 --repeats 3 --dbm
    OMP_NUM_THREADS=1 python bench/ais_speed.py --ckpt runs/rbm/<run>/checkpoints/last.ckpt --steps 2000

Both loops are also checked to give the same log Z in law (their difference within a few standard errors).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved, report  # noqa: E402

from lightning_gm.estimators.ais import ais_log_partition, base_rate_log_odds, betas_schedule, summarize_log_weights  # noqa: E402
from lightning_gm.estimators.rbm_ais import RBMAnnealingPath  # noqa: E402


def bare_sm_loop(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, b_base: torch.Tensor, runs: int, steps: int,
                 seed: int) -> torch.Tensor:
    """``RBM_AIS.m`` (Salakhutdinov & Murray 2008) in vectorised torch: float32 products and draws, float64
    log-weights. Returns the ``(runs,)`` log-weights (add ``log Z_A`` for log Z)."""
    g = torch.Generator().manual_seed(seed)
    W, b, c, b_base = W.float(), b.float(), c.float(), b_base.float()
    betas = betas_schedule(steps).tolist()
    n_hid = W.shape[1]
    v = (torch.rand(runs, W.shape[0], generator=g) < torch.sigmoid(b_base)).float()
    logww = -(v @ b_base).double() - n_hid * math.log(2.0)
    Wh = v @ W + c
    Bv_base, Bv = v @ b_base, v @ b
    for bb in betas[1:-1]:
        logww += ((1 - bb) * Bv_base + bb * Bv).double() + F.softplus(bb * Wh).double().sum(-1)
        ph = torch.sigmoid(bb * Wh)
        h = (torch.rand(ph.shape, generator=g) < ph).float()
        pv = torch.sigmoid((1 - bb) * b_base + bb * (h @ W.T + b))
        v = (torch.rand(pv.shape, generator=g) < pv).float()
        Wh = v @ W + c
        Bv_base, Bv = v @ b_base, v @ b
        logww -= ((1 - bb) * Bv_base + bb * Bv).double() + F.softplus(bb * Wh).double().sum(-1)
    logww += (v @ b).double() + F.softplus(Wh).double().sum(-1)
    return logww


def _rbm(args: argparse.Namespace):
    from lightning_gm.nn.rbm import BernoulliRBM

    if args.ckpt:
        from lightning_gm import load_model

        model = load_model(args.ckpt)
        return model.rbm, model.ais_base.double()
    g = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(784, 500)
    with torch.no_grad():
        rbm.W.normal_(0, 0.05, generator=g)
        rbm.b.normal_(-1, 1, generator=g)
        rbm.c.normal_(-1, 0.5, generator=g)
    return rbm, base_rate_log_odds(torch.sigmoid(rbm.b.detach()).unsqueeze(0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--steps", type=int, default=14500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt", default=None, help="an RBM checkpoint (default: random 784-500 weights)")
    p.add_argument("--dbm", action="store_true", help="also time the DBM path on a random 784-500-1000 DBM")
    p.add_argument("--no-scaling", action="store_true", help="skip the 10x-runs contender")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rbm, base = _rbm(args)
    path = RBMAnnealingPath(rbm, base)
    W, b, c = rbm.W.detach(), rbm.b.detach(), rbm.c.detach()
    results: dict[str, torch.Tensor] = {}

    def platform(runs: int, key: str):
        def run() -> None:
            results[key] = ais_log_partition(path, runs, args.steps, generator=torch.Generator().manual_seed(1)).log_weights
        return run

    def bare() -> None:
        results["bare"] = bare_sm_loop(W, b, c, base, args.runs, args.steps, seed=2)

    contenders = {"platform": platform(args.runs, "platform"), "bare S&M loop": bare}
    if not args.no_scaling:
        contenders[f"platform, {10 * args.runs} runs"] = platform(10 * args.runs, "platform10")
    if args.dbm:
        from lightning_gm.estimators.dbm import DBMAnnealingPath
        from lightning_gm.nn.dbm import BinaryDBM

        dbm = BinaryDBM([784, 500, 1000], weight_std=0.03)
        with torch.no_grad():
            dbm.biases[0].normal_(-1, 1)
        dbm_path = DBMAnnealingPath(dbm, base_rate_log_odds(torch.sigmoid(dbm.biases[0].detach()).unsqueeze(0)))

        def dbm_run() -> None:
            ais_log_partition(dbm_path, args.runs, args.steps, generator=torch.Generator().manual_seed(3))

        contenders["DBM 784-500-1000"] = dbm_run
    print(f"# AIS {args.runs} runs x {args.steps:,} steps, {args.threads} thread(s), {args.repeats} interleaved rounds",
          flush=True)
    t0 = time.time()
    times = interleaved(contenders, repeats=args.repeats)
    print(report(times, reference="bare S&M loop"))
    print(f"\nper step (best): " + ", ".join(f"{k} {1e3 * min(v) / args.steps:.2f} ms" for k, v in times.items()))
    if not args.no_scaling:
        big = [t / s for t, s in zip(times[f"platform, {10 * args.runs} runs"], times["platform"])]
        print(f"{10 * args.runs} runs cost {min(big):.2f}-{max(big):.2f} x {args.runs} runs (per round)")
    log_z_base = path.log_z_base()
    for key in ("platform", "bare", "platform10"):
        if key in results:
            res = summarize_log_weights(results[key], log_z_base, steps=args.steps)
            print(f"log Z ({key}): {res.log_z:.3f} +- {res.log_z_stderr:.3f}, ESS {res.effective_sample_size:.1f}")
    print(f"(wall {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""784-500 RBM on MNIST: this platform's recipe against scikit-learn's ``BernoulliRBM``, same data, same budget,
scored by the platform's AIS on the same test images.

    python bench/peers/rbm_sklearn.py --budget 00:00:15:00 [--config conf/rbm_cd25.yaml] [--replicates 3]
                                      [--out runs/peers/rbm_sklearn]

* **Here:** ``lightning_gm fit --config <config> --trainer.max_time=<budget>`` (default ``conf/rbm_cd25.yaml``:
  CD-25 on dynamically binarised MNIST, see its comment); the checkpoint the platform selects (best ``val/pll``).
* **Peer:** ``sklearn.neural_network.BernoulliRBM(n_components=500)`` with its defaults otherwise (PCD-1 with
  ``batch_size=10`` persistent chains, ``learning_rate=0.1``, no momentum or weight decay), fitted with its
  public ``fit`` on the same 50,000 training images as grey levels in [0, 1] (float32), which its positive phase
  uses as probabilities (scikit-learn's own digits example does the same; it has no per-batch binarisation).
  ``n_iter`` is chosen for the budget from the time of one epoch measured on the first 5,000 images.
* Both trainings run at the same time, one thread each.
* **Score:** both weight sets are loaded into the platform's ``RBM`` with the same AIS base (the training data's
  log-odds) and schedule (``ais_runs`` x ``ais_steps`` of the config: 100 x 14,500), ``--replicates``
  independent AIS runs each (seeds 0, 1, ...). The test NLL of an image is its free energy plus the mean
  :math:`\\log\\hat Z` over the replicates, on the platform's seeded binarisation of ``--examples`` evenly spaced
  test images. The standard error of the paired difference combines the per-image differences with the spread
  of the :math:`\\log\\hat Z` replicates of both models (the replicates' standard deviation over sqrt(replicates));
  each model's AIS effective sample size and the 3-sigma interval of the first replicate are reported beside it.

References: Salakhutdinov & Murray, "On the Quantitative Analysis of Deep Belief Networks", ICML 2008 (AIS);
Tieleman, "Training RBMs using approximations to the likelihood gradient", ICML 2008 (PCD, scikit-learn's
algorithm); scikit-learn ``sklearn/neural_network/_rbm.py``.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import common



def _data():
    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(binarize="dynamic", batch_size=1000, eval_batch_size=1000, val_size=10000, download=False)
    dm.setup()
    return dm


def train_peer(budget_s: float, out: Path) -> None:
    """scikit-learn's BernoulliRBM on the grey training images for (about) ``budget_s`` seconds."""
    from sklearn.neural_network import BernoulliRBM

    dm = _data()
    levels = dm.splits["train"][0]  # integer grey levels (dynamic binarisation happens per batch in the platform)
    x = (levels.float() / 255.0).reshape(len(levels), -1).numpy().astype(np.float32)
    start = time.time()
    probe = BernoulliRBM(n_components=500, n_iter=1, random_state=0)
    t0 = time.time()
    probe.fit(x[:5000])
    epoch_s = (time.time() - t0) * len(x) / 5000
    n_iter = max(1, int((budget_s - (time.time() - start)) / epoch_s))
    rbm = BernoulliRBM(n_components=500, n_iter=n_iter, random_state=0)
    t0 = time.time()
    rbm.fit(x)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "peer.pkl", "wb") as f:
        pickle.dump({"rbm": rbm, "n_iter": n_iter, "epoch_s_estimate": epoch_s, "fit_s": time.time() - t0,
                     "total_s": time.time() - start}, f)
    print(f"n_iter {n_iter} (epoch ~{epoch_s:.1f} s), fit {time.time() - t0:.0f} s, total {time.time() - start:.0f} s")


def _platform_rbm(config: str):
    """The config's RBM, built as the command builds it (same AIS schedule)."""
    from lightning_gm.cli import GenerativeCLI

    return GenerativeCLI(args=["--config", str(common.ROOT / config), "--trainer.logger=false"], run=False).model


def score(model, x: torch.Tensor, replicates: int) -> dict:
    """Per-image NLLs (free energy + mean log Z over AIS replicates) and the AIS diagnostics."""
    results = [model.compute_log_partition(seed=s) for s in range(replicates)]
    log_zs = [r.log_z for r in results]
    log_z = statistics.fmean(log_zs)
    with torch.no_grad():
        nll = -(model.log_prob_unnormalized(x).double() - log_z)
    spread = statistics.stdev(log_zs) / math.sqrt(replicates) if replicates > 1 else results[0].stderr
    first = results[0]
    return {"nll": nll, "log_z": log_z, "log_z_replicates": log_zs, "log_z_se": spread,
            "ess": [r.effective_sample_size for r in results], "interval_first": list(first.interval),
            "schedule": f"ais {first.runs}x{first.steps:,}"}


def main() -> None:
    parser = common.parser(__doc__, examples=10000)
    parser.add_argument("--config", default="conf/rbm_cd25.yaml")
    parser.add_argument("--replicates", type=int, default=3, help="independent AIS estimates of log Z per model")
    args = parser.parse_args()
    out, budget = Path(args.out or common.ROOT / "runs" / "peers" / "rbm_sklearn"), common.seconds(args.budget)
    if args.peer_only:
        train_peer(budget, out / "peer")
        return
    sides = {}
    if not args.score_only:
        sides = common.train_both(__file__, args.config, budget, out, ["--test_after_fit=false"])

    from lightning_gm.estimators.ais import base_rate_log_odds

    here = common.load_here(out, args.config)
    dm = _data()
    x_test = dm.splits["test"][0].reshape(len(dm.splits["test"][0]), -1)
    x = x_test[common.evenly_spaced(len(x_test), args.examples)].float()
    with open(out / "peer" / "peer.pkl", "rb") as f:
        peer_run = pickle.load(f)
    sk = peer_run["rbm"]
    peer = _platform_rbm(args.config).eval()
    train_mean = (dm.splits["train"][0].double() / 255.0).reshape(-1, 784).mean(0, keepdim=True)
    with torch.no_grad():
        peer.rbm.W.copy_(torch.from_numpy(np.asarray(sk.components_, dtype=np.float64).T))
        peer.rbm.b.copy_(torch.from_numpy(np.asarray(sk.intercept_visible_, dtype=np.float64)))
        peer.rbm.c.copy_(torch.from_numpy(np.asarray(sk.intercept_hidden_, dtype=np.float64)))
        base = base_rate_log_odds(train_mean).to(here.ais_base)
        here.ais_base.copy_(base)  # the same AIS base for both (the platform's is this already, from its data)
        peer.ais_base.copy_(base)
    s_here, s_peer = score(here, x, args.replicates), score(peer, x, args.replicates)
    stats = common.paired(s_here["nll"], s_peer["nll"])
    stats["diff_se"] = math.sqrt(stats["diff_se"] ** 2 + s_here["log_z_se"] ** 2 + s_peer["log_z_se"] ** 2)
    estimator = f"{s_here['schedule']}, {args.replicates} replicates, {stats['n']:,} evenly spaced test images"
    result = common.record("RBM 784-500, binarised MNIST", "scikit-learn BernoulliRBM", budget, estimator, stats, sides,
                           config=args.config, here={k: v for k, v in s_here.items() if k != "nll"},
                           peer_ais={k: v for k, v in s_peer.items() if k != "nll"},
                           peer_n_iter=peer_run["n_iter"], peer_total_s=peer_run["total_s"])
    common.write_result(out, result, "RBM 784-500, binarised MNIST",
                        "scikit-learn BernoulliRBM (PCD-1, lr 0.1, batch 10)",
                        f"{stats['nll_here']:.2f} (ESS {min(s_here['ess']):.0f})",
                        f"{stats['nll_peer']:.2f} (ESS {min(s_peer['ess']):.0f})",
                        f"{s_here['schedule']} x {args.replicates}, {stats['n']:,} test images")

if __name__ == "__main__":
    main()

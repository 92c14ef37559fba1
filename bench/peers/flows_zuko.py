"""MAF on dequantised MNIST: this platform's shipped recipe against zuko's MAF, same data, same budget, same scorer.

    pip install --no-deps zuko           # the `bench` extra of pyproject.toml (tested with zuko 1.6.0)
    python bench/peers/flows_zuko.py --budget 00:00:15:00 [--examples 10000] [--out runs/peers/flows_zuko]

* **Here:** ``lightning_gm fit --config conf/maf_mnist.yaml --trainer.max_time=<budget>``, i.e. the MAF (5) recipe
  of Papamakarios et al.: 5 MADEs with two hidden layers of 1,024 ReLU units, order reversed between MADEs, batch
  norm after each, logit transform (lambda = 1e-6), Adam 1e-4 with weight decay 1e-6, batches of 100, validation
  every epoch, the best checkpoint by ``val/nll``.
* **Peer:** ``zuko.flows.MAF(784, transforms=5, hidden_features=(1024, 1024), randperm=False)`` (5 affine MADE
  transforms with the same hidden layers, the order flipped between transforms, zuko's soft-bounded scales, no
  batch norm: zuko has none) on the logit of the same data, trained by a plain PyTorch loop with the same
  optimiser, batch size and gradient clipping, validated on the same 10,000 images at every epoch's end and when
  the budget is spent (as Lightning's ``max_time`` stop does), keeping the best state.
* Both trainings run at the same time, one thread each, so both see the same load.
* **Score:** the exact log-likelihood of dequantised test images in data space, ``log p(x) = log p_flow(logit(x))
  + log|d logit / dx|`` (the platform's ``LogitTransform``), on ``--examples`` evenly spaced test images (the
  platform's seeded dequantisation of the test set), per example; the paired difference and its standard error.

References: Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017;
Rozet et al., zuko (https://github.com/probabilists/zuko).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

import common

CONFIG = "conf/maf_mnist.yaml"
ALPHA = 1e-6
D = 784


def _data():
    from lightning_gm.data import MNISTDataModule

    dm = MNISTDataModule(dequantize=True, flatten=True, batch_size=100, eval_batch_size=500, val_size=10000,
                         download=False)
    dm.setup()
    return dm


def zuko_maf():
    import zuko

    return zuko.flows.MAF(D, transforms=5, hidden_features=(1024, 1024), randperm=False)


def _peer_log_prob(flow, x: torch.Tensor) -> torch.Tensor:
    """Data-space log-density: zuko's density of the logit plus the logit's log-det (the platform's layer)."""
    from lightning_gm.nn.flows import LogitTransform

    y, ladj = LogitTransform(ALPHA)(x)
    return flow().log_prob(y) + ladj


def train_peer(budget_s: float, out: Path, epoch_batches: int = 0) -> None:
    """The peer's training loop (run in its own process by ``main``)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dm = _data()
    flow = zuko_maf()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4, weight_decay=1e-6)
    x_val = dm.splits["val"][0]
    best, best_state, steps, epochs = math.inf, copy.deepcopy(flow.state_dict()), 0, 0
    start = time.time()
    done = False
    while not done:
        flow.train()
        for i, batch in enumerate(dm.train_dataloader()):
            if epoch_batches and i == epoch_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            loss = -_peer_log_prob(flow, x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 100.0)
            opt.step()
            steps += 1
            if time.time() - start >= budget_s:
                done = True
                break
        epochs += 0 if done else 1
        flow.eval()  # validated at every epoch's end and where the budget stops it, as Lightning's max_time does
        with torch.no_grad():
            val = -torch.cat([_peer_log_prob(flow, c) for c in x_val.split(500)]).mean().item()
        print(f"epoch {epochs} step {steps} {time.time() - start:.0f}s val/nll {val:.2f}", flush=True)
        if val < best:
            best, best_state = val, copy.deepcopy(flow.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": best_state, "steps": steps, "epochs": epochs, "best_val_nll": best,
                "train_s": time.time() - start}, out / "peer.pt")


def main() -> None:
    parser = common.parser(__doc__, examples=10000)
    parser.add_argument("--epoch-batches", type=int, default=0, help="batches per epoch on both sides (0: all; "
                        "a smoke test of the plumbing)")
    args = parser.parse_args()
    out, budget = Path(args.out or common.ROOT / "runs" / "peers" / "flows_zuko"), common.seconds(args.budget)
    if args.peer_only:
        train_peer(budget, out / "peer", args.epoch_batches)
        return
    sides = {}
    if not args.score_only:
        smoke = [f"--trainer.limit_train_batches={args.epoch_batches}"] if args.epoch_batches else []
        sides = common.train_both(__file__, CONFIG, budget, out, smoke, [f"--epoch-batches={args.epoch_batches}"])
    here = common.load_here(out, CONFIG)
    dm = _data()
    x_test = dm.splits["test"][0]
    idx = common.evenly_spaced(len(x_test), args.examples)
    x = x_test[idx]
    peer_ckpt = torch.load(out / "peer" / "peer.pt")
    peer = zuko_maf()
    peer.load_state_dict(peer_ckpt["state_dict"])
    peer.eval()
    with torch.no_grad():
        nll_here = -torch.cat([here.log_prob(c) for c in x.split(500)])
        nll_peer = -torch.cat([_peer_log_prob(peer, c) for c in x.split(500)])
    stats = common.paired(nll_here, nll_peer)
    bpd = lambda nll: (nll + D * math.log(256)) / (D * math.log(2))  # noqa: E731
    result = common.record("flow (MAF, dequantised MNIST)", "zuko 1.6.0 MAF", budget,
                           f"exact, {stats['n']:,} evenly spaced test images", stats, sides,
                           bpd_here=bpd(stats["nll_here"]), bpd_peer=bpd(stats["nll_peer"]),
                           peer_steps=peer_ckpt["steps"], peer_epochs=peer_ckpt["epochs"],
                           here_params=here.num_parameters(), peer_params=sum(p.numel() for p in peer.parameters()))
    common.write_result(out, result, "flow: MAF (5), dequantised MNIST", "zuko MAF",
                        f"{stats['nll_here']:.1f} ({result['bpd_here']:.3f} bpd)",
                        f"{stats['nll_peer']:.1f} ({result['bpd_peer']:.3f} bpd)", f"exact, {stats['n']:,} test images")

if __name__ == "__main__":
    main()

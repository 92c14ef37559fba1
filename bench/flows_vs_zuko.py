r"""Training-step time of our MAF and RealNVP against zuko's, with the same architecture, in one run.

Run by hand, never in CI. zuko is *not* a dependency of lightning_gm; install it next to it first::

    pip install zuko            # tested with zuko 1.6.0
    python bench/flows_vs_zuko.py [--threads 1] [--trials 7] [--steps 30]

A training step is ``loss = -log p(x).mean(); zero_grad; backward; Adam step`` (the exact NLL,
:math:`\log p(x) = \log\mathcal N(f(x)) + \log|\det \partial f/\partial x|`). Architectures, per setting:

* MAF: ``L`` affine MADE layers with the given hidden widths (ReLU), order reversed between layers
  (ours: ``lightning_gm.nn.flows.MAF(permutation="reverse")``; zuko: ``zuko.flows.MAF(randperm=False)``).
* RealNVP: ``L`` affine couplings with alternating masks and an MLP conditioner of the given
  hidden widths (ours: ``RealNVP`` -- the conditioner reads the masked full vector and writes 2D
  values; zuko: ``zuko.flows.NICE`` with affine couplings -- it reads D/2 and writes D values, so the
  first and last conditioner layers are about half the size of ours; the hidden layers are equal).

Both sides' steps are timed interleaved (ours, zuko, ours, ...) and the median of ``trials``
blocks of ``steps`` steps is reported, so machine load hits both alike. Ratio = ours / zuko
(< 1: ours faster). Results go to stdout as a Markdown table (copy it into bench/RESULTS.md).

References:
    Rozet et al., zuko (https://github.com/probabilists/zuko).
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import platform
import statistics
from typing import Callable

import torch
from torch import Tensor, nn

from lightning_gm.models.flow import standard_normal_log_prob
from lightning_gm.nn.flows import MAF, FlowLayer, RealNVP
from timing import parse, parser, per_call, rounds

__all__ = ["SETTINGS", "ours", "theirs", "time_steps", "main"]

#: (name, features D, batch, layers L, hidden widths)
SETTINGS: list[tuple[str, int, int, int, tuple[int, ...]]] = [
    ("toy 2-D", 2, 500, 5, (64, 64)),
    ("D=64", 64, 256, 5, (256, 256)),
    ("MNIST D=784", 784, 100, 5, (1024,)),
]


def ours(kind: str, d: int, layers: int, hidden: tuple[int, ...]) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """Our flow and its ``x -> log p(x)``."""
    flow: FlowLayer
    if kind == "MAF":
        flow = MAF((d,), num_layers=layers, hidden_features=hidden, permutation="reverse")
    else:
        flow = RealNVP((d,), num_layers=layers, hidden_features=hidden[0], num_hidden_layers=len(hidden))

    def log_prob(x: Tensor) -> Tensor:
        z, ladj = flow(x)
        return standard_normal_log_prob(z) + ladj

    return flow, log_prob


def theirs(kind: str, d: int, layers: int, hidden: tuple[int, ...]) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """zuko's flow with the same architecture and its ``x -> log p(x)``."""
    import zuko

    if kind == "MAF":
        flow = zuko.flows.MAF(d, transforms=layers, randperm=False, hidden_features=hidden)
    else:
        flow = zuko.flows.NICE(d, transforms=layers, randmask=False, hidden_features=hidden)
    return flow, lambda x: flow().log_prob(x)


def training_step(log_prob: Callable[[Tensor], Tensor], x: Tensor, opt: torch.optim.Optimizer) -> Callable[[], None]:
    """One step of maximum likelihood on ``x``: ``-log p(x)`` averaged, backward, ``opt.step()``."""
    def step() -> None:
        loss = -log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = parser(__doc__, repeats=None)
    p.add_argument("--trials", type=int, default=7, help="interleaved timing blocks per flow")
    p.add_argument("--steps", type=int, default=30, help="training steps per block")
    args = parse(p)
    torch.manual_seed(0)
    import zuko

    print(f"torch {torch.__version__}, zuko {zuko.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), median of {args.trials} x {args.steps} steps\n")
    print("| flow | setting | batch | ours ms/step | zuko ms/step | ratio ours/zuko | params ours / zuko |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("MAF", "RealNVP"):
        for name, d, batch, layers, hidden in SETTINGS:
            x = torch.randn(batch, d)
            sides = [ours(kind, d, layers, hidden), theirs(kind, d, layers, hidden)]
            steps = [training_step(lp, x, torch.optim.Adam(m.parameters(), lr=1e-4)) for m, lp in sides]
            blocks = {side: (lambda step=step: per_call(step, calls=args.steps)[0])
                      for side, step in zip(("ours", "zuko"), steps)}
            for step in steps:  # warm-up
                per_call(step, calls=3)
            times = rounds(blocks, args.trials)
            a, b = (statistics.median(times[side]) * 1e3 for side in ("ours", "zuko"))
            pa, pb = (sum(p.numel() for p in m.parameters()) for m, _ in sides)
            print(f"| {kind} | {name} (L={layers}, hidden={list(hidden)}) | {batch} | {a:.2f} | {b:.2f} | "
                  f"**{a / b:.2f}** | {pa:,} / {pb:,} |", flush=True)


if __name__ == "__main__":
    main()
